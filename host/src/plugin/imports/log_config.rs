//! `log` and `config`, in every contract version: what a plugin logs
//! (bounded, masked, at most a number of lines a call), and its queue's
//! settings.

use crate::plugin::HostState;
use crate::plugin::bindings::{v0_1, v0_2};
use crate::plugin::host::Level;

// switchyard:plugin@0.1.0

impl v0_1::switchyard::plugin::types::Host for HostState {}

impl v0_1::switchyard::plugin::log::Host for HostState {
    fn log(&mut self, level: v0_1::switchyard::plugin::log::Level, message: String) {
        use v0_1::switchyard::plugin::log::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        HostState::log(self, level, message);
    }
}

impl v0_1::switchyard::plugin::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config_get(&key)
    }

    fn get_json(&mut self) -> String {
        self.config_json()
    }
}

// switchyard:plugin@0.2.0

impl v0_2::switchyard::plugin::messages::Host for HostState {}

impl v0_2::switchyard::plugin::log::Host for HostState {
    fn log(&mut self, level: v0_2::switchyard::plugin::log::Level, message: String) {
        use v0_2::switchyard::plugin::log::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        HostState::log(self, level, message);
    }
}

impl v0_2::switchyard::plugin::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config_get(&key)
    }

    fn get_json(&mut self) -> String {
        self.config_json()
    }
}
