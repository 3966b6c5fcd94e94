//! engram-si
