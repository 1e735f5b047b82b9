//! The write-ahead log: the append path ([`writer`]) and recovery ([`recovery`]).

pub mod recovery;
pub(crate) mod writer;
