//! A core WebAssembly module (what clang makes of a C plugin) into a component of one of the
//! contract's worlds: the world's type information is embedded into the module, then wrapped, the
//! way `wasm-tools component embed` and `component new` do — in process, with the contract this
//! binary carries.

use anyhow::{Context, bail};

/// The WASI module name a core module imports when it uses libc's I/O.
const WASI_PREVIEW1: &str = "wasi_snapshot_preview1";

/// Wraps `core` (a reactor module exporting the world's functions and `cabi_realloc`) into a
/// component of `world`.
pub fn component(core: &[u8], wit: &str, world: &str) -> anyhow::Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_source("plugin.wit", wit).context("parse the plugin contract")?;
    let world = resolve.select_world(&[package], Some(world)).with_context(|| format!("find world {world}"))?;
    for import in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::ImportSection(section) = import.context("read the core module")? {
            for import in section.into_imports() {
                let import = import.context("read the core module's imports")?;
                if import.module == WASI_PREVIEW1 {
                    bail!(
                        "the module imports {}::{} (libc I/O such as printf or fopen): a plugin has no files or \
                         terminal; write through ferrymq_log instead",
                        import.module,
                        import.name
                    );
                }
            }
        }
    }
    let mut module = core.to_vec();
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8)
        .context("embed the world's type information")?;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|mut encoder| encoder.encode())
        .context("the module does not implement the world (its exports and imports must match the contract)")
}
