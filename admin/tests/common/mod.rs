//! What the tally-admin tests share: a test world's resources as tally-admin reaches them.

use admin::Tally;
use shared::store::Store;
use tests::TestApp;

/// The world's Tally, its table reached through `store` (the operator's, or
/// one that carries faults).
pub fn tally_with(app: &TestApp, store: Store) -> Tally {
    Tally {
        store,
        likes: app.stack.likes.clone(),
        points: app.stack.points.clone(),
        events_dead_letters: app.stack.events_dead_letters.clone(),
        metrics: None,
    }
}
