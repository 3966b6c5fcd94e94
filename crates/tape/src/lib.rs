//! engram-tape
