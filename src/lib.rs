//! sqsbeat (crate docs filled in below)
pub mod duration;
pub mod schedule;
