//! Tally's library crate, shared by every function.
//!
//! - [`domain`]: the rules, with no AWS types in sight.
//! - [`message`]: the versioned queue envelope (the documented contract of SPEC section 4).
//! - [`likes_service`] and [`points_service`]: the flows (accept, apply, read)
//!   that the handlers, the worker and reconcile call.
//! - [`points_insight`]: the balance at an instant, statements, leaderboards.
//! - [`store`], [`queue`] and [`bus`]: adapters that own every DynamoDB, SQS
//!   and EventBridge call.
//! - [`http`]: what the HTTP functions share: caller identity, problem+json errors.
//! - [`config`]: environment configuration, read once per cold start.

pub mod bus;
pub mod capacity;
pub mod clock;
pub mod config;
pub mod domain;
pub mod http;
pub mod likes_service;
pub mod message;
pub mod metrics;
pub mod points_insight;
pub mod points_service;
pub mod queue;
pub mod store;
pub mod usage;
