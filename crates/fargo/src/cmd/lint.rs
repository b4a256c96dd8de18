//! `fargo lint [PATH...]`: the offline checks of `crate::lint` over files and directories
//! (default `taskdefs/`). A directory means its `*.json` files and its `envs/*.yaml`; a
//! service file `X.service.json` is also checked against the task definition `X.json` next
//! to it. With `--env`, files are rendered first, so unfilled placeholders are errors too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::cmd::render::{RenderError, Vars, VarsArgs, read_json, render_value};
use crate::lint::{self, Finding, Kind, Options, Severity};

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Files or directories; default `taskdefs`.
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub vars: VarsArgs,
    /// Also treat images whose name contains this as having no shell (repeatable).
    #[arg(long = "shell-less", value_name = "FRAGMENT")]
    pub shell_less: Vec<String>,
}

/// The files `fargo lint` looks at for `paths`.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RenderError> {
    let mut files = Vec::new();
    for p in paths {
        if !p.is_dir() {
            files.push(p.clone());
            continue;
        }
        let mut here = Vec::new();
        for dir in [p.clone(), p.join("envs")] {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let f = e.path();
                let ext = f.extension().and_then(|x| x.to_str());
                let wanted = if dir == *p {
                    ext == Some("json")
                } else {
                    matches!(ext, Some("yaml" | "yml"))
                };
                if wanted && f.is_file() {
                    here.push(f);
                }
            }
        }
        here.sort();
        files.extend(here);
    }
    Ok(files)
}

/// Reads `path`, renders it with `vars` when given, and runs the checks for its kind.
pub fn lint_file(path: &Path, vars: Option<&Vars>, opts: &Options) -> Vec<Finding> {
    let ext = path.extension().and_then(|x| x.to_str());
    if matches!(ext, Some("yaml" | "yml")) {
        return match Vars::from_env_file(path) {
            Ok(_) => Vec::new(),
            Err(e) => vec![file_error("env/schema", e)],
        };
    }
    let v = match load(path, vars) {
        Ok(v) => v,
        Err(e) => return vec![file_error("render", e)],
    };
    let kind = Kind::of(path);
    let mut findings = lint::lint_value(kind, &v, opts);
    if kind == Kind::Service
        && let Some(td_path) = sibling_taskdef(path)
        && let Ok(td) = load(&td_path, vars)
    {
        lint::service::check_against_taskdef(&v, &td, &mut findings);
    }
    findings
}

fn load(path: &Path, vars: Option<&Vars>) -> Result<Value, RenderError> {
    let v = read_json(path)?;
    match vars {
        Some(vars) => render_value(&v, vars, &path.display().to_string()),
        None => Ok(v),
    }
}

fn file_error(rule: &'static str, e: RenderError) -> Finding {
    Finding {
        severity: Severity::Error,
        rule,
        path: "(file)".into(),
        message: e.to_string(),
    }
}

/// `dir/X.service.json` -> `dir/X.json`, when it exists.
pub fn sibling_taskdef(service: &Path) -> Option<PathBuf> {
    let name = service
        .file_name()?
        .to_str()?
        .strip_suffix(".service.json")?;
    let td = service.with_file_name(format!("{name}.json"));
    td.is_file().then_some(td)
}

pub fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("taskdefs")]
    } else {
        args.paths.clone()
    };
    let vars = match &args.vars.env {
        Some(_) => Some(args.vars.load()?),
        None if !args.vars.sets.is_empty() => Some(args.vars.load()?),
        None => None,
    };
    let mut opts = Options::default();
    opts.shell_less_images
        .extend(args.shell_less.iter().cloned());
    let files = expand(&paths)?;
    if files.is_empty() {
        anyhow::bail!(
            "no files to lint in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let (mut errors, mut warnings) = (0, 0);
    for f in &files {
        for finding in lint_file(f, vars.as_ref(), &opts) {
            match finding.severity {
                Severity::Error => errors += 1,
                Severity::Warning => warnings += 1,
            }
            println!("{}: {finding}", f.display());
        }
    }
    println!(
        "{} file(s) checked: {errors} error(s), {warnings} warning(s)",
        files.len()
    );
    Ok(if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
