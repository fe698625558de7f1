//! Which dev server an app needs, read from its package.json: one table, used by the build and by resume.

/// How to start an app's dev server and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevServer {
    pub framework: Framework,
    /// The npm command, run in the workspace with `PORT` set.
    pub command: &'static str,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    Next,
    Vite,
    CreateReactApp,
    Express,
    Hono,
    DevScript,
    StartScript,
    Unknown,
}

/// Facts about a package.json the detection needs (parsing JSON is the caller's job: domain has no serde).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageFacts {
    /// Names in dependencies and devDependencies.
    pub dependencies: Vec<String>,
    /// Names in scripts.
    pub scripts: Vec<String>,
}

impl PackageFacts {
    fn has_dep(&self, name: &str) -> bool {
        self.dependencies.iter().any(|d| d == name)
    }
    fn has_script(&self, name: &str) -> bool {
        self.scripts.iter().any(|s| s == name)
    }
    /// Whether `npm install` has anything to do.
    pub fn needs_install(&self) -> bool {
        !self.dependencies.is_empty()
    }
}

/// The detection table of the pipeline, in priority order.
pub fn detect(pkg: &PackageFacts) -> DevServer {
    let (framework, command, port) = if pkg.has_dep("next") {
        (Framework::Next, "npm run dev", 3000)
    } else if pkg.has_dep("vite") {
        (Framework::Vite, "npm run dev", 5173)
    } else if pkg.has_dep("react-scripts") {
        (Framework::CreateReactApp, "npm start", 3000)
    } else if pkg.has_dep("express") {
        (Framework::Express, "npm start", 3000)
    } else if pkg.has_dep("@hono/node-server") {
        (Framework::Hono, "npm start", 3000)
    } else if pkg.has_script("dev") {
        (Framework::DevScript, "npm run dev", 3000)
    } else if pkg.has_script("start") {
        (Framework::StartScript, "npm start", 3000)
    } else {
        (Framework::Unknown, "npm run dev", 3000)
    };
    DevServer {
        framework,
        command,
        port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(d: &[&str], s: &[&str]) -> PackageFacts {
        PackageFacts {
            dependencies: d.iter().map(|x| x.to_string()).collect(),
            scripts: s.iter().map(|x| x.to_string()).collect(),
        }
    }

    #[test]
    fn detection_table() {
        let cases = [
            (
                deps(&["next", "react"], &["dev"]),
                Framework::Next,
                "npm run dev",
                3000,
            ),
            (
                deps(&["vite"], &["dev"]),
                Framework::Vite,
                "npm run dev",
                5173,
            ),
            (
                deps(&["react-scripts"], &["start"]),
                Framework::CreateReactApp,
                "npm start",
                3000,
            ),
            (
                deps(&["express"], &["start"]),
                Framework::Express,
                "npm start",
                3000,
            ),
            (
                deps(&["@hono/node-server"], &[]),
                Framework::Hono,
                "npm start",
                3000,
            ),
            (
                deps(&[], &["dev", "start"]),
                Framework::DevScript,
                "npm run dev",
                3000,
            ),
            (
                deps(&[], &["start"]),
                Framework::StartScript,
                "npm start",
                3000,
            ),
            (deps(&[], &[]), Framework::Unknown, "npm run dev", 3000),
        ];
        for (pkg, fw, cmd, port) in cases {
            let d = detect(&pkg);
            assert_eq!((d.framework, d.command, d.port), (fw, cmd, port), "{pkg:?}");
        }
    }

    #[test]
    fn next_wins_over_a_start_script() {
        assert_eq!(
            detect(&deps(&["next"], &["start"])).framework,
            Framework::Next
        );
    }
}
