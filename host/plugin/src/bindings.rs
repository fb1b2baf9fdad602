//! The one place wasmtime's bindings for `wit/plugin.wit` are generated: a module per world, sharing
//! the `host` interface and the types.

pub mod filter {
    wasmtime::component::bindgen!({ world: "filter", path: "../../wit" });
}

pub mod route {
    wasmtime::component::bindgen!({
        world: "route",
        path: "../../wit",
        with: { "ferrymq:plugin/host": crate::bindings::filter::ferrymq::plugin::host },
    });
}

pub mod tx_check {
    wasmtime::component::bindgen!({
        world: "tx-check",
        path: "../../wit",
        with: {
            "ferrymq:plugin/host": crate::bindings::filter::ferrymq::plugin::host,
            "ferrymq:plugin/types": crate::bindings::route::ferrymq::plugin::types,
        },
    });
}
