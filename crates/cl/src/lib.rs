//! engram-cl
