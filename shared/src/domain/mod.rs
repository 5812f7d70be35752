//! Pure rules. Nothing here knows about DynamoDB, SQS or Lambda.

pub mod erasure;
pub mod events;
pub mod ids;
pub mod likers;
pub mod likes;
pub mod points;
pub mod timestamp;
