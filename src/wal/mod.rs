//! The write-ahead log: the append path ([`writer`]) and recovery ([`recovery`]).

pub(crate) mod checkpoint;
pub(crate) mod log;
pub mod recovery;
pub(crate) mod writer;
