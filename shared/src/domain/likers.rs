//! Who likes a post: the likers list, newest first, and the few most recent
//! likers a count read can show ("liked by alice, bob and 1,204 others").
//!
//! Likers are ordered by when they liked, then by user id, both descending:
//! the order of the likers index's sort key `{liked_at}#{user}` read backwards.
//! A user's `liked_at` only ever moves later (a like of a liked post keeps it;
//! a like after an unlike is a later operation), which is what makes a page
//! boundary a safe cursor (see [`LikerKey`]).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::ids::UserId;

/// The most recent likers one count read may ask for (`likers=N`).
pub const MAX_RECENT_LIKERS: usize = 10;

/// A post's counter keeps its newest likers, the batch's new ones added to
/// the older ones; once it holds more than this, the worker trims it back to
/// the newest [`MAX_RECENT_LIKERS`] with one write. That is one trim per 20
/// new likers at most, and the list stays small enough for the counter item
/// to stay about 1 KB (docs/capacity.md).
pub const RECENT_LIKERS_TRIM_ABOVE: usize = 30;

/// Unlikers one counter write removes from the recent likers at most; the
/// rest (a batch of hundreds of unlikes of one post) are removed by the tidy
/// write after it, and only if the list holds them. Keeps the update
/// expression well under DynamoDB's 4 KB.
pub const MAX_UNLIKERS_PER_WRITE: usize = 40;

/// Entries one tidy write removes at most, the oldest first: its condition
/// names each, and DynamoDB takes at most 4 KB of expression. A list that grew
/// past this (tidies that failed in a row) shrinks by this much per batch.
pub const MAX_TIDY_PER_WRITE: usize = 50;

/// Where one liker sits in the order: when they liked (microseconds since the
/// epoch), then who. Greater is newer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LikerKey {
    pub liked_at_micros: i64,
    pub user: UserId,
}

/// A time as the recent likers order it: microseconds since the epoch (the
/// precision of stored timestamps), saturating far outside any stored time.
pub fn micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// The parsed `likers=N` of a count read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("likers must be an integer from 1 to {MAX_RECENT_LIKERS}, got {0:?}")]
pub struct InvalidLikersCount(pub String);

pub fn parse_recent_likers_count(text: &str) -> Result<usize, InvalidLikersCount> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_RECENT_LIKERS).contains(&n) => Ok(n),
        _ => Err(InvalidLikersCount(text.to_owned())),
    }
}

/// A post's recent likers as its counter keeps them: who, and when they liked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentLikers(BTreeMap<UserId, i64>);

/// What one batch does to a post's recent likers: a user who now likes it (and
/// when), or who no longer does (`None`).
pub type RecentLikerChange = (UserId, Option<i64>);

impl RecentLikers {
    pub fn new(entries: impl IntoIterator<Item = (UserId, i64)>) -> Self {
        Self(entries.into_iter().collect())
    }

    /// The newest `n` likers, newest first.
    pub fn newest(&self, n: usize) -> Vec<UserId> {
        self.ordered().take(n).map(|key| key.user).collect()
    }

    /// The `n` newest of `likers` (any order), as a counter keeps them.
    pub fn newest_of(likers: impl IntoIterator<Item = LikerKey>, n: usize) -> Self {
        let mut likers: Vec<LikerKey> = likers.into_iter().collect();
        likers.sort_unstable_by(|a, b| b.cmp(a));
        likers.truncate(n);
        Self::new(likers.into_iter().map(|k| (k.user, k.liked_at_micros)))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each liker with their place in the order.
    pub fn keys(&self) -> impl Iterator<Item = LikerKey> {
        self.0.iter().map(|(user, at)| LikerKey {
            liked_at_micros: *at,
            user: user.clone(),
        })
    }

    pub fn entries(&self) -> impl Iterator<Item = (&UserId, i64)> {
        self.0.iter().map(|(user, at)| (user, *at))
    }

    /// The list after a batch's changes.
    pub fn apply(&mut self, changes: &[RecentLikerChange]) {
        for (user, liked_at) in changes {
            match liked_at {
                Some(at) => self.0.insert(user.clone(), *at),
                None => self.0.remove(user),
            };
        }
    }

    /// What of a batch's changes its counter write carries: its newest
    /// [`MAX_RECENT_LIKERS`] new likers (the older ones cannot be among the
    /// post's newest afterwards) and at most [`MAX_UNLIKERS_PER_WRITE`] unlikers.
    pub fn carried_by_counter_write(batch: &[RecentLikerChange]) -> Vec<RecentLikerChange> {
        let likers = Self::newest_of(
            batch.iter().filter_map(|(user, at)| {
                at.map(|liked_at_micros| LikerKey {
                    liked_at_micros,
                    user: user.clone(),
                })
            }),
            MAX_RECENT_LIKERS,
        );
        let unlikers = batch
            .iter()
            .filter(|(_, at)| at.is_none())
            .take(MAX_UNLIKERS_PER_WRITE)
            .cloned();
        likers
            .0
            .into_iter()
            .map(|(user, at)| (user, Some(at)))
            .chain(unlikers)
            .collect()
    }

    /// What the write after a counter write removes from the list it left
    /// (`self`): the batch's unlikers it still holds (past what the counter
    /// write carried), then, if it is still long, all but the newest (see
    /// [`to_trim`](Self::to_trim)).
    /// At most [`MAX_TIDY_PER_WRITE`], the trimmed ones oldest first.
    pub fn to_tidy(&self, batch: &[RecentLikerChange]) -> Vec<(UserId, i64)> {
        let mut kept = self.clone();
        let mut removed = Vec::new();
        for (user, at) in batch {
            if at.is_none()
                && let Some(held) = kept.0.remove(user)
            {
                removed.push((user.clone(), held));
            }
        }
        removed.extend(kept.to_trim().into_iter().rev());
        removed.truncate(MAX_TIDY_PER_WRITE);
        removed
    }

    /// The entries a trim removes: none while the list holds at most
    /// [`RECENT_LIKERS_TRIM_ABOVE`]; past that, all but the newest
    /// [`MAX_RECENT_LIKERS`].
    pub fn to_trim(&self) -> Vec<(UserId, i64)> {
        if self.0.len() <= RECENT_LIKERS_TRIM_ABOVE {
            return Vec::new();
        }
        self.ordered()
            .skip(MAX_RECENT_LIKERS)
            .map(|key| (key.user, key.liked_at_micros))
            .collect()
    }

    fn ordered(&self) -> impl Iterator<Item = LikerKey> {
        let mut keys: Vec<LikerKey> = self
            .0
            .iter()
            .map(|(user, at)| LikerKey {
                liked_at_micros: *at,
                user: user.clone(),
            })
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.into_iter()
    }
}

/// What one partition of a post's likers has given a page so far, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRead<K> {
    pub fetched: Vec<K>,
    /// The partition has likers past the fetched ones.
    pub more: bool,
}

/// A page of likers merges a post's partitions, each read newest first a few
/// at a time. Which partitions must be read further before the newest
/// `wanted` of all are known: those with more to give whose oldest fetched
/// liker is itself among the newest `wanted` fetched (anything they still hold
/// is older than it, so it could be next). Empty once the page is known.
pub fn partitions_to_read_further<K: Ord>(reads: &[PartitionRead<K>], wanted: usize) -> Vec<usize> {
    let mut all: Vec<&K> = reads.iter().flat_map(|read| &read.fetched).collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    // The oldest liker that would make the page, when enough are fetched.
    let threshold = if all.len() >= wanted && wanted > 0 {
        all.get(wanted - 1).copied()
    } else {
        None
    };
    reads
        .iter()
        .enumerate()
        .filter(|(_, read)| read.more)
        .filter(|(_, read)| match (read.fetched.last(), threshold) {
            (Some(oldest), Some(threshold)) => oldest >= threshold,
            _ => true,
        })
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn the_newest_come_first_and_ties_go_by_user_id_descending() {
        let recent = RecentLikers::new([(user("alice"), 5), (user("bob"), 7), (user("carol"), 5)]);
        assert_eq!(
            recent.newest(10),
            [user("bob"), user("carol"), user("alice")]
        );
        assert_eq!(recent.newest(1), [user("bob")]);
    }

    #[test]
    fn a_batch_adds_new_likers_and_removes_unlikers() {
        let mut recent = RecentLikers::new([(user("alice"), 1), (user("bob"), 2)]);
        recent.apply(&[(user("carol"), Some(3)), (user("alice"), None)]);
        assert_eq!(recent.newest(10), [user("carol"), user("bob")]);
    }

    #[test]
    fn a_trim_keeps_the_newest_only_once_the_list_is_long() {
        let long = |n: i64| RecentLikers::new((0..n).map(|i| (user(&format!("u{i:03}")), i)));
        assert!(long(RECENT_LIKERS_TRIM_ABOVE as i64).to_trim().is_empty());
        let over = long(RECENT_LIKERS_TRIM_ABOVE as i64 + 1);
        let trimmed = over.to_trim();
        assert_eq!(
            trimmed.len(),
            RECENT_LIKERS_TRIM_ABOVE + 1 - MAX_RECENT_LIKERS
        );
        let mut kept = over.clone();
        kept.apply(
            &trimmed
                .iter()
                .map(|(u, _)| (u.clone(), None))
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            kept.newest(MAX_RECENT_LIKERS),
            over.newest(MAX_RECENT_LIKERS)
        );
        assert_eq!(kept.len(), MAX_RECENT_LIKERS);
    }

    #[test]
    fn a_counter_write_carries_the_batchs_newest_likers_and_bounded_unlikers() {
        let mut batch: Vec<RecentLikerChange> = (0..100)
            .map(|i| (user(&format!("l{i:03}")), Some(i)))
            .collect();
        batch.extend((0..100).map(|i| (user(&format!("x{i:03}")), None)));
        let carried = RecentLikers::carried_by_counter_write(&batch);
        let likers: Vec<_> = carried.iter().filter(|(_, at)| at.is_some()).collect();
        assert_eq!(likers.len(), MAX_RECENT_LIKERS);
        assert!(likers.iter().all(|(_, at)| at.unwrap() >= 90), "{likers:?}");
        assert_eq!(carried.len(), MAX_RECENT_LIKERS + MAX_UNLIKERS_PER_WRITE);

        // The list the write left still holds an unliker it did not carry: the tidy removes it.
        let left = RecentLikers::new([(user("l099"), 99), (user("x099"), 5)]);
        assert_eq!(left.to_tidy(&batch), [(user("x099"), 5)]);
    }

    #[test]
    fn a_list_grown_long_is_tidied_oldest_first_a_bounded_number_at_a_time() {
        let grown = RecentLikers::new((0..200).map(|i| (user(&format!("u{i:03}")), i)));
        let tidy = grown.to_tidy(&[]);
        assert_eq!(tidy.len(), MAX_TIDY_PER_WRITE);
        assert_eq!(tidy[0], (user("u000"), 0), "the oldest go first");
        let mut left = grown.clone();
        for _ in 0..4 {
            let tidy = left.to_tidy(&[]);
            left.apply(
                &tidy
                    .iter()
                    .map(|(u, _)| (u.clone(), None))
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(left.len(), MAX_RECENT_LIKERS);
        assert_eq!(
            left.newest(MAX_RECENT_LIKERS),
            grown.newest(MAX_RECENT_LIKERS)
        );
    }

    #[test]
    fn likers_count_is_one_to_ten() {
        assert_eq!(parse_recent_likers_count("3"), Ok(3));
        for bad in ["0", "11", "-1", "x", "", "3.0"] {
            assert!(parse_recent_likers_count(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Reading partitions further until nothing is left to read yields
        /// exactly the newest `wanted` of all their likers.
        #[test]
        fn merged_reads_find_the_newest_of_all_partitions(
            partitions in proptest::collection::vec(proptest::collection::btree_set(0u32..500, 0..30), 1..8),
            wanted in 1usize..20,
            chunk in 1usize..5,
        ) {
            let sorted: Vec<Vec<u32>> = partitions.iter().map(|p| p.iter().rev().copied().collect()).collect();
            let mut reads: Vec<PartitionRead<u32>> = sorted
                .iter()
                .map(|p| PartitionRead { fetched: p.iter().take(chunk).copied().collect(), more: p.len() > chunk })
                .collect();
            loop {
                let further = partitions_to_read_further(&reads, wanted);
                if further.is_empty() { break; }
                for i in further {
                    let read = &mut reads[i];
                    let next = (read.fetched.len() * 2).max(1);
                    read.fetched = sorted[i].iter().take(next).copied().collect();
                    read.more = sorted[i].len() > next;
                }
            }
            let mut merged: Vec<u32> = reads.iter().flat_map(|r| r.fetched.clone()).collect();
            merged.sort_unstable_by(|a, b| b.cmp(a));
            merged.truncate(wanted);
            let mut expected: Vec<u32> = sorted.concat();
            expected.sort_unstable_by(|a, b| b.cmp(a));
            expected.truncate(wanted);
            prop_assert_eq!(merged, expected);
        }
    }
}
