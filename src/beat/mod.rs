//! Periodic entries: the pure decision ([`tick`]), the freshness rule
//! ([`freshness`]), the driver that reads the clock, claims, sends and
//! confirms ([`driver`]), and what an operator does to a running schedule
//! ([`ops`]: run now, backfill), whose slot selection is pure
//! ([`backfill`]).

pub mod backfill;
pub mod driver;
pub mod freshness;
pub mod ops;
pub mod tick;
