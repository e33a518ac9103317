//! Compiles `proto/sluice.proto` with a pure-Rust protobuf compiler (protox), so no `protoc` is needed,
//! then generates prost messages, tonic services and proto3-JSON serde impls (pbjson) from it.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): the target directory is shared between checkouts (a cache under
    // $HOME), and a build script compiled in one checkout must not point into it from another.
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let proto_file = proto_dir.join("sluice.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());

    let descriptors = protox::compile([&proto_file], [&proto_dir])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("sluice_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;

    // Maps as BTreeMaps: a job file written from a graph lists their entries in a stable order.
    tonic_prost_build::configure()
        .btree_map(".")
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(descriptors)?;

    let descriptor_bytes = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .preserve_proto_field_names()
        .btree_map(["."])
        .build(&[".sluice.v1"])?;
    Ok(())
}
