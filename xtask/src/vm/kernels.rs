//! The kernels of the VM matrix, pinned in ONE place, and their cache.
//!
//! Debian moves kernel versions on: when a pinned package disappears from the
//! archive, edit [`PINS`] (this file) to a version `apt` still lists.

use std::env;
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};

use super::mirrors::Archive;

/// Where a pinned kernel package is published: a suite of one of the
/// archives this machine's apt uses (`vm::mirrors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub archive: Archive,
    pub suite: &'static str,
}

/// One kernel of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The matrix name (`6.1`).
    pub name: &'static str,
    /// `uname -r` of the guest (`6.1.0-57-amd64`).
    pub release: &'static str,
    /// The suites (private apt state) that publish its package.
    pub sources: &'static [Source],
}

const BULLSEYE: Source = Source {
    archive: Archive::Main,
    suite: "bullseye",
};
const BULLSEYE_SECURITY: Source = Source {
    archive: Archive::Security,
    suite: "bullseye-security",
};
const BOOKWORM: Source = Source {
    archive: Archive::Main,
    suite: "bookworm",
};
const BOOKWORM_SECURITY: Source = Source {
    archive: Archive::Security,
    suite: "bookworm-security",
};

/// The kernel matrix, oldest first: the default of `cargo xtask test`.
pub const PINS: &[Pin] = &[
    Pin {
        name: "5.10",
        release: "5.10.0-30-amd64",
        sources: &[BULLSEYE, BULLSEYE_SECURITY],
    },
    Pin {
        name: "6.1",
        release: "6.1.0-57-amd64",
        sources: &[BOOKWORM_SECURITY, BOOKWORM],
    },
    Pin {
        name: "6.12",
        release: "6.12.117+deb12-amd64",
        sources: &[BOOKWORM_SECURITY, BOOKWORM],
    },
];

/// The path of this file, for messages that tell where to edit the pins.
pub const PINS_FILE: &str = "xtask/src/vm/kernels.rs";

/// A kernel to boot: a pin, or a release string given in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub release: String,
    pub sources: Vec<Source>,
}

impl Kernel {
    /// The Debian package that ships this kernel's image and modules.
    pub fn package(&self) -> String {
        format!("linux-image-{}-unsigned", self.release)
    }
}

/// `5.10`, `6.1`, `6.12` (a matrix name) or a full release
/// (`6.1.0-57-amd64`, `5.10.0-30-amd64`).
pub fn resolve(spec: &str) -> Result<Kernel> {
    let spec = spec.trim();
    if let Some(pin) = PINS.iter().find(|p| p.name == spec || p.release == spec) {
        return Ok(Kernel {
            release: pin.release.to_owned(),
            sources: pin.sources.to_vec(),
        });
    }
    let valid = !spec.is_empty()
        && spec
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+~".contains(c));
    if !valid || !spec.ends_with("-amd64") {
        bail!(
            "unknown kernel `{spec}`: use one of {} or a Debian release such as {}",
            names().join(", "),
            PINS[0].release
        );
    }
    // A release outside the pins: look for it in the suites of the pin of the
    // same series, or in all of them.
    let series: Vec<&Pin> = PINS
        .iter()
        .filter(|p| spec.starts_with(&format!("{}.", p.name)))
        .collect();
    let mut sources = Vec::new();
    for pin in if series.is_empty() {
        PINS.iter().collect()
    } else {
        series
    } {
        for source in pin.sources {
            if !sources.contains(source) {
                sources.push(*source);
            }
        }
    }
    Ok(Kernel {
        release: spec.to_owned(),
        sources,
    })
}

/// The matrix names, in order.
pub fn names() -> Vec<&'static str> {
    PINS.iter().map(|p| p.name).collect()
}

/// Parses a `--kernels` / `TRACER_VM_KERNELS` value: `all`, `none` (or an
/// empty string) or a comma-separated list of names or releases.
pub fn parse_list(value: &str) -> Result<Vec<Kernel>> {
    let value = value.trim();
    match value {
        "" | "none" => return Ok(Vec::new()),
        "all" => {
            return PINS.iter().map(|p| resolve(p.name)).collect();
        }
        _ => {}
    }
    let mut kernels: Vec<Kernel> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let kernel = resolve(part)?;
        if !kernels.contains(&kernel) {
            kernels.push(kernel);
        }
    }
    if kernels.is_empty() {
        return Err(anyhow!("no kernel in `{value}`"));
    }
    Ok(kernels)
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/tracer`: kernels, private apt state and
/// the scratch directories of running VMs (outside the repo and `target/`).
pub fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("tracer"));
    }
    let home = env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("neither XDG_CACHE_HOME nor HOME is set; set HOME"))?;
    Ok(PathBuf::from(home).join(".cache").join("tracer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_releases_resolve_to_the_pins() {
        assert_eq!(names(), ["5.10", "6.1", "6.12"]);
        assert_eq!(resolve("6.1").unwrap().release, "6.1.0-57-amd64");
        assert_eq!(
            resolve("6.1.0-57-amd64").unwrap().package(),
            "linux-image-6.1.0-57-amd64-unsigned"
        );
        assert_eq!(resolve("5.10").unwrap().sources[0].suite, "bullseye");
        for pin in PINS {
            assert!(pin.release.starts_with(&format!("{}.", pin.name)));
            assert!(!pin.sources.is_empty());
        }
    }

    #[test]
    fn an_unpinned_release_searches_the_suites_of_its_series() {
        let k = resolve("6.1.0-58-amd64").unwrap();
        assert_eq!(k.release, "6.1.0-58-amd64");
        assert_eq!(k.sources, PINS[1].sources);
        assert!(resolve("4.19").is_err());
        assert!(resolve("6.1.0-57-amd64; rm").is_err());
    }

    #[test]
    fn kernel_lists_parse() {
        assert!(parse_list("none").unwrap().is_empty());
        assert!(parse_list("").unwrap().is_empty());
        assert_eq!(parse_list("all").unwrap().len(), 3);
        let two = parse_list("5.10, 6.1,5.10").unwrap();
        let releases: Vec<_> = two.iter().map(|k| k.release.as_str()).collect();
        assert_eq!(releases, ["5.10.0-30-amd64", "6.1.0-57-amd64"]);
        assert!(parse_list("6.1,bogus").is_err());
        assert!(parse_list(",").is_err());
    }
}
