//! The host's bindings of every contract version it runs. A published
//! version never changes; each has its own module, and the host links all
//! of them, so a plugin built against any of them runs.

/// `switchyard:plugin@0.1.0`: the handler, `log` and `config`
/// (wit/switchyard-plugin@0.1.0).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/switchyard-plugin@0.1.0",
        world: "plugin",
        exports: { default: async },
    });
}

/// `switchyard:plugin@0.2.0`: 0.1.0's imports, plus `publish`, outbound HTTP
/// (`wasi:http`, implemented by wasmtime-wasi-http with the host's own
/// request sender) and key-value state (`wasi:keyvalue`, draft 2, backed by
/// Redis), SQL on PostgreSQL and mail over SMTP (wit/switchyard-plugin@0.2.0).
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/switchyard-plugin@0.2.0",
        world: "plugin",
        imports: {
            "wasi:keyvalue/store": async | trappable,
                        "wasi:keyvalue/atomics": async | trappable,
            "switchyard:plugin/sql": async,
            "switchyard:plugin/mail": async,
        },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:keyvalue/store.bucket": crate::plugin::keyvalue::Bucket,
            "wasi:keyvalue/atomics.cas": crate::plugin::keyvalue::Cas,
        },
    });
}
