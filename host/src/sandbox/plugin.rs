//! Loading a handler component: read, check it is a component of the
//! `connection-handler` or `server-handler` world (or a `wasi:cli/command`,
//! served inetd-style),
//! link it once into an `InstancePre` so that each connection costs an
//! instantiation, not a compilation.

use super::engine::Needs;
use super::state::HostState;
use crate::bindings::{ConnectionHandlerPre, ServerHandlerPre};
use anyhow::{Context, bail};
use std::fmt::Write as _;
use std::path::Path;
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;

/// The linker every handler is linked against: WASI 0.2 and pier's outbox.
pub(crate) fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    HostState::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Reads a plugin file, with one clear error per kind of bad file: its bytes,
/// known to be a component.
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
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
    Ok(bytes)
}

/// Compiles a component read by [`read`].
pub(crate) fn compile(engine: &Engine, bytes: &[u8], path: &Path) -> anyhow::Result<Component> {
    Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("plugin `{}` cannot be compiled", path.display()))
}

/// What one instance of a component takes from the pool, as far as its
/// binary says before it is compiled ([`count_instances`]): core instances,
/// the most memories or tables one module defines, its largest initial
/// memory. [`complete`] adds the rest once it is compiled.
pub(crate) fn scan(bytes: &[u8], path: &Path) -> anyhow::Result<Needs> {
    let mut needs = Needs::default();
    count_instances(bytes, &mut needs)
        .with_context(|| format!("plugin `{}` is not a well-formed component", path.display()))?;
    Ok(needs)
}

/// `scanned` ([`scan`]) with wasmtime's own count of the memories and tables
/// an instance of `component` makes, and its largest table's initial size.
pub(crate) fn complete(scanned: Needs, component: &Component, path: &Path) -> anyhow::Result<Needs> {
    let Some(required) = component.resources_required() else {
        bail!("plugin `{}` instantiates a module it imports, which pier cannot size a pool for", path.display());
    };
    Ok(Needs {
        memories: required.num_memories,
        tables: required.num_tables,
        table_elements: required.max_initial_table_size.unwrap_or(0),
        one_per_listener: exports(component.engine(), component, SERVER_INBOX),
        ..scanned
    })
}

/// Walks a component binary's sections, nested modules and components
/// included: each core `instantiate` is one core instance, and each core
/// module's memory and table sections say how many it defines (and how
/// large its memories start).
fn count_instances(component: &[u8], needs: &mut Needs) -> anyhow::Result<()> {
    use wasmparser::{Instance, Payload};
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload? {
            Payload::InstanceSection(instances) => {
                for instance in instances {
                    if matches!(instance?, Instance::Instantiate { .. }) {
                        needs.core_instances += 1;
                    }
                }
            }
            Payload::MemorySection(memories) => {
                needs.memories_per_module = needs.memories_per_module.max(memories.count());
                for memory in memories {
                    let memory = memory?;
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    needs.initial_memory = needs.initial_memory.max(memory.initial.saturating_mul(page));
                }
            }
            Payload::TableSection(tables) => {
                needs.tables_per_module = needs.tables_per_module.max(tables.count());
            }
            _ => {}
        }
    }
    Ok(())
}

/// A linked handler, by the world it was built for.
pub(crate) enum Pre {
    /// pier's `connection-handler`: inbox calls, one instance per connection.
    Handler(ConnectionHandlerPre<HostState>),
    /// pier's `server-handler`: one instance for every connection of the
    /// listener, each a `conn` handle.
    Server(ServerHandlerPre<HostState>),
    /// A `wasi:cli/command` that imports nothing of pier's: one run per
    /// connection, its stdin and stdout the socket (inetd, `tcpserver`).
    Command(CommandPre<HostState>),
}

impl Pre {
    pub(crate) fn engine(&self) -> &Engine {
        match self {
            Pre::Handler(pre) => pre.engine(),
            Pre::Server(pre) => pre.engine(),
            Pre::Command(pre) => pre.engine(),
        }
    }

    pub(crate) fn component(&self) -> &Component {
        match self {
            Pre::Handler(pre) => pre.instance_pre().component(),
            Pre::Server(pre) => pre.instance_pre().component(),
            Pre::Command(pre) => pre.instance_pre().component(),
        }
    }

    /// Instantiates it in `store`, calling nothing.
    pub(crate) async fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<()> {
        match self {
            Pre::Handler(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::Server(pre) => pre.instantiate_async(store).await.map(drop),
            Pre::Command(pre) => pre.instantiate_async(store).await.map(drop),
        }
    }
}

/// Whether a component is a `wasi:cli/command` (it exports `wasi:cli/run`)
/// that knows nothing of pier (imports none of pier's interfaces).
fn is_command(engine: &Engine, component: &Component) -> bool {
    let ty = component.component_type();
    ty.exports(engine).any(|(name, _)| name.starts_with("wasi:cli/run@0.2"))
        && !ty.imports(engine).any(|(name, _)| name.starts_with("pier:server/"))
}

/// Links a compiled component as a `connection-handler`, a
/// `server-handler` or a command, or says why not.
pub(crate) fn prepare(linker: &Linker<HostState>, component: &Component, path: &Path) -> anyhow::Result<Pre> {
    let not_handler = || {
        format!(
            "plugin `{}` is not a pier connection-handler or server-handler (build it against wit/ with \
             `world connection-handler` or `world server-handler`) nor a wasi:cli command",
            path.display()
        )
    };
    let pre = linker.instantiate_pre(component).map_err(anyhow::Error::from).with_context(not_handler)?;
    if is_command(linker.engine(), component) {
        return CommandPre::new(pre).map(Pre::Command).map_err(anyhow::Error::from).with_context(not_handler);
    }
    if exports(linker.engine(), component, SERVER_INBOX) {
        return ServerHandlerPre::new(pre).map(Pre::Server).map_err(anyhow::Error::from).with_context(not_handler);
    }
    ConnectionHandlerPre::new(pre).map(Pre::Handler).map_err(anyhow::Error::from).with_context(not_handler)
}

/// The export that makes a component a `server-handler`.
const SERVER_INBOX: &str = "pier:server/server-inbox@0.1.0";

fn exports(engine: &Engine, component: &Component, name: &str) -> bool {
    component.component_type().exports(engine).any(|(export, _)| export == name)
}

/// What `pier check` prints: the world a plugin targets, its imports and
/// its exports.
pub fn describe(engine: &Engine, component: &Component) -> String {
    let ty = component.component_type();
    let mut out = String::from(if is_command(engine, component) {
        "world: wasi:cli/command (served inetd-style)\n"
    } else if exports(engine, component, SERVER_INBOX) {
        "world: pier:server/server-handler@0.1.0 (one instance for all the listener's connections)\n"
    } else {
        "world: pier:server/connection-handler@0.1.0\n"
    });
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
