//! The web console. It arrives with the console issue; the crate exists so the
//! workspace layout is the product's from the start.
