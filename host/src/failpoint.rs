//! Named crash points for tests: with the `failpoints` feature, a process
//! whose `SWITCHYARD_FAILPOINT` names a point aborts when it reaches it, the
//! way a power cut or `kill -9` would stop it there. Without the feature this
//! compiles to nothing.

/// Aborts the process if the `SWITCHYARD_FAILPOINT` environment variable names
/// `name` (only with the `failpoints` feature).
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        static ARMED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let armed = ARMED.get_or_init(|| std::env::var("SWITCHYARD_FAILPOINT").ok());
        if armed.as_deref() == Some(name) {
            eprintln!("failpoint {name}: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
