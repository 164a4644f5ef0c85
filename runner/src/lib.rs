//! The runner side of serving, kept apart from the server so that its
//! binary (`whet-runner`) links only what one instance needs: the ONNX
//! Runtime engine, the socket protocol (`wire`), and the confinement every
//! child that touches a user's model enters (`sandbox`).

pub mod sandbox;
pub mod serve;
pub mod wire;
