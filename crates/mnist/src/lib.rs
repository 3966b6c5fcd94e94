//! engram-mnist
