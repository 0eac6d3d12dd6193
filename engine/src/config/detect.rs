//! What `envctl config init` (and the legacy importer, for a service whose command the old file left out) can
//! tell about a directory: a Python web app (pyproject with uvicorn/FastAPI, or a plain entry script) or a
//! JavaScript app with a `dev` script, whose package manager is chosen by its lock file.

use std::path::Path;

/// A runnable service found in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Suggested service name.
    pub name: String,
    /// Command line, using `{port}` where the tool takes a port flag.
    pub command: String,
    /// Suggested base port.
    pub port: u16,
    /// Directory relative to the repository root (`None` for the root itself).
    pub cwd: Option<String>,
    /// Why this was chosen, for the user.
    pub reason: String,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Detects a service in `dir`, if it holds something envctl knows how to run.
pub fn detect_service(dir: &Path) -> Option<Detected> {
    python(dir).or_else(|| node(dir))
}

fn python(dir: &Path) -> Option<Detected> {
    let pyproject = read(&dir.join("pyproject.toml"));
    let requirements = read(&dir.join("requirements.txt"));
    let wants_uvicorn =
        ["uvicorn", "fastapi"].iter().any(|dep| pyproject.contains(dep) || requirements.contains(dep));
    for (module_file, module) in
        [("app/main.py", "app.main"), ("main.py", "main"), ("src/main.py", "src.main")]
    {
        let source = read(&dir.join(module_file));
        if wants_uvicorn && (source.contains("FastAPI(") || source.contains("Starlette(")) {
            return Some(Detected {
                name: "backend".into(),
                command: format!("python3 -m uvicorn {module}:app --host 127.0.0.1 --port {{port}}"),
                port: 8000,
                cwd: None,
                reason: format!("{module_file} creates an ASGI app and the project depends on uvicorn"),
            });
        }
    }
    for entry in ["main.py", "app.py", "server.py", "run.py", "manage.py"] {
        if dir.join(entry).is_file() {
            let command = if entry == "manage.py" {
                "python3 manage.py runserver 127.0.0.1:{port}".to_owned()
            } else {
                format!("python3 {entry}")
            };
            return Some(Detected {
                name: "backend".into(),
                command,
                port: 8000,
                cwd: None,
                reason: format!("{entry} is a Python entry point (it gets its port in $PORT)"),
            });
        }
    }
    None
}

fn node(dir: &Path) -> Option<Detected> {
    let manifest: serde_json::Value = serde_json::from_str(&read(&dir.join("package.json"))).ok()?;
    let scripts = manifest.get("scripts")?.as_object()?;
    let (script, body) =
        ["dev", "start"].iter().find_map(|s| scripts.get(*s).and_then(|b| b.as_str()).map(|b| (*s, b)))?;
    let manager =
        [("bun.lockb", "bun"), ("bun.lock", "bun"), ("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn")]
            .iter()
            .find(|(lock, _)| dir.join(lock).is_file())
            .map_or("npm", |(_, manager)| manager);
    let vite = body.contains("vite");
    let separator = if manager == "npm" { " --" } else { "" };
    let command = if vite {
        format!("{manager} run {script}{separator} --port {{port}} --strictPort --host 127.0.0.1")
    } else {
        format!("{manager} run {script}")
    };
    Some(Detected {
        name: "frontend".into(),
        command,
        port: if vite { 5173 } else { 3000 },
        cwd: None,
        reason: format!("package.json has a `{script}` script; {manager} chosen by its lock file"),
    })
}

/// Detects services at the repository root and in the usual subdirectories, one per directory, names unique.
pub fn detect_all(repo_root: &Path) -> Vec<Detected> {
    let mut found: Vec<Detected> = Vec::new();
    for sub in ["", "backend", "frontend", "api", "server", "web", "app", "client"] {
        let dir = if sub.is_empty() { repo_root.to_path_buf() } else { repo_root.join(sub) };
        if !dir.is_dir() {
            continue;
        }
        if let Some(mut service) = detect_service(&dir) {
            if !sub.is_empty() {
                service.cwd = Some(sub.to_owned());
                if sub != "app" {
                    sub.clone_into(&mut service.name);
                }
            }
            if found.iter().any(|f| f.name == service.name) {
                service.name = format!("{}-{}", service.name, found.len() + 1);
            }
            found.push(service);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_fastapi_and_vite_with_their_package_manager() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("backend/app")).expect("mkdir");
        std::fs::write(
            root.join("backend/pyproject.toml"),
            "[project]\ndependencies = [\"fastapi\", \"uvicorn\"]\n",
        )
        .expect("w");
        std::fs::write(root.join("backend/app/main.py"), "from fastapi import FastAPI\napp = FastAPI()\n")
            .expect("w");
        std::fs::create_dir_all(root.join("frontend")).expect("mkdir");
        std::fs::write(root.join("frontend/package.json"), r#"{"scripts":{"dev":"vite"}}"#).expect("w");
        std::fs::write(root.join("frontend/pnpm-lock.yaml"), "").expect("w");
        let found = detect_all(root);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].name, "backend");
        assert_eq!(found[0].command, "python3 -m uvicorn app.main:app --host 127.0.0.1 --port {port}");
        assert_eq!(found[0].cwd.as_deref(), Some("backend"));
        assert_eq!(found[1].command, "pnpm run dev --port {port} --strictPort --host 127.0.0.1");
        assert_eq!(found[1].port, 5173);
    }
}
