// Rebuild the object when the linker changes (a new bpf-linker can emit different code).
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
}
