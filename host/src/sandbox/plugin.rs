//! Loading a handler component: read, check it is a component of the
//! `connection-handler` world, link it once into an `InstancePre` so that each
//! connection costs an instantiation, not a compilation.

use super::state::HostState;
use crate::bindings::ConnectionHandlerPre;
use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker, types::ComponentItem};

/// The linker every handler is linked against: WASI 0.2 and pier's outbox.
pub(crate) fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    HostState::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Reads and compiles a component, with one clear error per kind of bad file.
pub fn compile(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "plugin `{shown}` not found: check the path (the demo handlers are built by `make build` into target/wasm32-wasip2/release/)"
        ),
        _ => anyhow::Error::new(e).context(format!("cannot read plugin `{shown}`")),
    })?;
    if wasmparser::Parser::is_core_wasm(&bytes) {
        bail!(
            "plugin `{shown}` is a core wasm module, not a component: build it with `cargo build --target wasm32-wasip2`, or wrap it with `wasm-tools component new`"
        );
    }
    if !wasmparser::Parser::is_component(&bytes) {
        bail!(
            "plugin `{shown}` is not a WebAssembly component: give the .wasm file of a handler built for wasm32-wasip2"
        );
    }
    Component::new(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("plugin `{shown}` cannot be compiled"))
}

/// Links a compiled component as a `connection-handler`, or says why not.
pub(crate) fn prepare(
    linker: &Linker<HostState>,
    component: &Component,
    path: &Path,
) -> anyhow::Result<ConnectionHandlerPre<HostState>> {
    let not_handler = || {
        format!(
            "plugin `{}` is not a pier connection-handler (build it against wit/ with `world connection-handler`)",
            path.display()
        )
    };
    let pre = linker.instantiate_pre(component).map_err(anyhow::Error::from).with_context(not_handler)?;
    ConnectionHandlerPre::new(pre).map_err(anyhow::Error::from).with_context(not_handler)
}

/// What `pier check` prints: the world a plugin targets, its imports and
/// its exports.
pub fn describe(engine: &Engine, component: &Component) -> String {
    let ty = component.component_type();
    let mut out = String::from("world: pier:server/connection-handler@0.1.0\n");
    let kind = |item: &ComponentItem| match item {
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    };
    for (name, item) in ty.imports(engine) {
        let _ = writeln!(out, "import {} {name}", kind(&item.ty));
    }
    for (name, item) in ty.exports(engine) {
        let _ = writeln!(out, "export {} {name}", kind(&item.ty));
    }
    out
}
