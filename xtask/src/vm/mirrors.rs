//! The Debian mirrors this machine's apt already uses (the kernels come
//! from the same ones, other suites): read from /etc/apt/sources.list and
//! /etc/apt/sources.list.d (one-line `.list` and deb822 `.sources` files),
//! so no mirror address is written into the project.

use std::fs;

use anyhow::{Result, bail};

/// Which archive a suite lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Archive {
    /// `bookworm`, `bullseye`, ...
    Main,
    /// `bookworm-security`, `bullseye-security`.
    Security,
}

/// The main and security archive URIs apt is configured with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirrors {
    pub main: Option<String>,
    pub security: Option<String>,
}

impl Mirrors {
    /// From this machine's apt configuration.
    pub fn from_host() -> Mirrors {
        let mut texts = Vec::new();
        if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
            texts.push((false, t));
        }
        if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut paths: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let deb822 = p.extension().is_some_and(|e| e == "sources");
                let list = p.extension().is_some_and(|e| e == "list");
                if (deb822 || list)
                    && let Ok(t) = fs::read_to_string(&p)
                {
                    texts.push((deb822, t));
                }
            }
        }
        let mut m = Mirrors::default();
        for (deb822, t) in &texts {
            m.add(&if *deb822 {
                parse_deb822(t)
            } else {
                parse_list(t)
            });
        }
        m
    }

    fn add(&mut self, entries: &[(String, Vec<String>)]) {
        for (uri, suites) in entries {
            // Only Debian's own archives: their suites have Debian names.
            let debian = suites.iter().any(|s| {
                s.starts_with("bookworm") || s.starts_with("bullseye") || s.starts_with("trixie")
            });
            if !debian {
                continue;
            }
            let uri = uri.trim_end_matches('/').to_string();
            if suites.iter().any(|s| s.ends_with("-security")) {
                self.security.get_or_insert(uri);
            } else {
                self.main.get_or_insert(uri);
            }
        }
    }

    /// The URI of `archive`, or one line saying what to configure.
    pub fn uri(&self, archive: Archive) -> Result<&str> {
        let (found, what) = match archive {
            Archive::Main => (&self.main, "a Debian archive (e.g. the bookworm suite)"),
            Archive::Security => (
                &self.security,
                "Debian's security archive (a *-security suite)",
            ),
        };
        match found {
            Some(u) => Ok(u),
            None => bail!(
                "apt on this machine has no source for {what} in /etc/apt/sources.list(.d); the VM kernels are fetched from the mirrors apt already uses"
            ),
        }
    }
}

/// `deb [opts] URI SUITE COMPONENTS...` lines.
fn parse_list(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next()?.trim();
            let rest = l.strip_prefix("deb ")?.trim();
            let rest = match rest.strip_prefix('[') {
                Some(r) => r.split_once(']')?.1.trim(),
                None => rest,
            };
            let mut words = rest.split_whitespace();
            Some((words.next()?.to_string(), vec![words.next()?.to_string()]))
        })
        .collect()
}

/// deb822 stanzas: `Types: deb`, `URIs:`, `Suites:`.
fn parse_deb822(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        for line in stanza.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let words = || v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
            match k.trim().to_ascii_lowercase().as_str() {
                "types" => types = words(),
                "uris" => uris = words(),
                "suites" => suites = words(),
                "enabled" => enabled = v.trim() != "no",
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") {
            for u in uris {
                out.push((u, suites.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_and_one_line_sources() {
        let mut m = Mirrors::default();
        m.add(&parse_deb822(
            "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
             Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb\nURIs: https://other.example/node\nSuites: nodistro\n",
        ));
        assert_eq!(
            m.uri(Archive::Main).ok(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            m.uri(Archive::Security).ok(),
            Some("http://mirror.example/debian-security")
        );
        let mut l = Mirrors::default();
        l.add(&parse_list(
            "# x\ndeb [signed-by=/k.gpg] http://m.example/debian bullseye main\ndeb-src http://m.example/debian bullseye main\n",
        ));
        assert_eq!(l.uri(Archive::Main).ok(), Some("http://m.example/debian"));
        assert!(l.uri(Archive::Security).is_err());
    }
}
