//! Open-loop CRUD load generator for kube-apiserver. Not built yet (issue 5).

fn main() {
    eprintln!("stress-test is not built yet (issue 5)");
    std::process::exit(2);
}
