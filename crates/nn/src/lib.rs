//! engram-nn
