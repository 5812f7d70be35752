//! Identifiers (SPEC section 3). Post ids, operation ids (idempotency keys) and
//! references: 1 to 128 characters of `[A-Za-z0-9._:-]`. User ids are subjects as
//! identity providers issue them (`auth0|5f7c…`, `google-oauth2|1087…`, a UUID,
//! an e-mail address): 1 to 128 printable ASCII characters other than space and
//! `#` (the table's key separator).

use serde::{Deserialize, Serialize};
use std::fmt;

pub const MAX_IDENTIFIER_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentifier {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_IDENTIFIER_LEN} characters, got {0}")]
    TooLong(usize),
    #[error("may contain only A-Z, a-z, 0-9, '.', '_', ':' and '-', found {0:?}")]
    BadCharacter(char),
    #[error("may contain only printable ASCII other than space and '#', found {0:?}")]
    BadUserCharacter(char),
}

/// Post ids, operation ids and references.
fn check_identifier(value: &str) -> Result<(), InvalidIdentifier> {
    check_chars(value, |c| {
        (c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
            .then_some(())
            .ok_or(InvalidIdentifier::BadCharacter(c))
    })
}

/// User ids: printable ASCII (`!` to `~`) but `#`.
fn check_user_id(value: &str) -> Result<(), InvalidIdentifier> {
    check_chars(value, |c| {
        (c.is_ascii_graphic() && c != '#')
            .then_some(())
            .ok_or(InvalidIdentifier::BadUserCharacter(c))
    })
}

fn check_chars(
    value: &str,
    allowed: impl Fn(char) -> Result<(), InvalidIdentifier>,
) -> Result<(), InvalidIdentifier> {
    if value.is_empty() {
        return Err(InvalidIdentifier::Empty);
    }
    value.chars().try_for_each(allowed)?;
    // Every allowed character is one byte, so the byte length is the character count.
    if value.len() > MAX_IDENTIFIER_LEN {
        return Err(InvalidIdentifier::TooLong(value.len()));
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $check:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, InvalidIdentifier> {
                let value = value.into();
                $check(&value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidIdentifier;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A post, as named by the client app.
    PostId,
    check_identifier
);
identifier!(
    /// A user: the JWT `sub` of the caller, or a user named in a request body.
    UserId,
    check_user_id
);
identifier!(
    /// One accepted operation: server-made for likes, the `Idempotency-Key` for points.
    OperationId,
    check_identifier
);

identifier!(
    /// What a points write is for in the caller's own system (an order id, a
    /// ticket number), carried on its ledger entries.
    Reference,
    check_identifier
);

impl OperationId {
    /// A fresh, time-ordered id (UUID v7) for operations the client does not name.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_accept_the_documented_alphabet() {
        assert!(PostId::parse("Post-1.a_b:c").is_ok());
        assert!(PostId::parse("x".repeat(128)).is_ok());
    }

    #[test]
    fn identifiers_reject_empty_long_and_foreign_characters() {
        assert_eq!(PostId::parse(""), Err(InvalidIdentifier::Empty));
        assert_eq!(
            PostId::parse("x".repeat(129)),
            Err(InvalidIdentifier::TooLong(129))
        );
        assert_eq!(
            PostId::parse("a#b"),
            Err(InvalidIdentifier::BadCharacter('#'))
        );
        assert_eq!(
            UserId::parse("é"),
            Err(InvalidIdentifier::BadUserCharacter('é'))
        );
        assert_eq!(
            UserId::parse("a b"),
            Err(InvalidIdentifier::BadUserCharacter(' '))
        );
        assert_eq!(
            UserId::parse("a#b"),
            Err(InvalidIdentifier::BadUserCharacter('#'))
        );
        assert_eq!(
            UserId::parse("a\tb"),
            Err(InvalidIdentifier::BadUserCharacter('\t'))
        );
    }

    #[test]
    fn user_ids_take_subjects_as_identity_providers_issue_them() {
        for sub in [
            "auth0|5f7c8ec7c33c6c004bbafe82",
            "google-oauth2|108750324561234567890",
            "0b5f2c8e-9d7a-4c1e-8f3b-2a6d9e4c7b10",
            "ana.lopez+tally@example.com",
            "github|12345!~",
        ] {
            assert!(UserId::parse(sub).is_ok(), "{sub}");
        }
        assert!(UserId::parse("x".repeat(129)).is_err());
        assert!(
            PostId::parse("auth0|5f7c").is_err(),
            "post ids keep the narrow alphabet"
        );
    }

    #[test]
    fn identifiers_validate_when_deserialized() {
        assert!(serde_json::from_str::<PostId>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<PostId>("\"not ok\"").is_err());
    }

    #[test]
    fn generated_operation_ids_are_valid_identifiers() {
        let id = OperationId::generate();
        assert!(OperationId::parse(id.as_str()).is_ok());
    }
}
