//! Periodic entries: the pure decision ([`tick`]) and the driver that
//! reads the clock, claims, sends and confirms ([`driver`]).

pub mod driver;
pub mod tick;
