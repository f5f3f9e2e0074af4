//! The operator's TOML, as both programs read it at start: parsed into the raw structs, then
//! checked. A bad file must be refused with a message, never crash the program.

#![no_main]

use jd_proxy::config::raw::RawConfig;
use jd_proxy::config::Config;
use libfuzzer_sys::fuzz_target;
use template_provider::server::{ProviderConfig, RawProviderConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = toml::from_str::<RawConfig>(text) {
        if let Err(e) = Config::from_raw(raw) {
            let _ = e.to_string();
        }
    }
    if let Ok(raw) = toml::from_str::<RawProviderConfig>(text) {
        if let Err(e) = ProviderConfig::from_raw(raw) {
            let _ = e.to_string();
        }
    }
});
