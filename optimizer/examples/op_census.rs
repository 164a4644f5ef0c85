//! Prints the op types ONNX Runtime ends up with for a model (Level3 graph).
fn main() {
    let src = std::env::args().nth(1).expect("model path");
    let dst = std::env::temp_dir().join("op_census.onnx");
    optimizer::engine::save_optimized(
        std::path::Path::new(&src),
        &dst,
        optimizer::engine::GraphLevel::All,
    )
    .expect("optimize");
    let m = optimizer::onnx::load(&dst).expect("load");
    let mut ops = std::collections::BTreeMap::new();
    for n in &optimizer::onnx::graph(&m).node {
        *ops.entry(format!("{}:{}", n.domain, n.op_type))
            .or_insert(0) += 1;
    }
    println!("{ops:?}");
}
