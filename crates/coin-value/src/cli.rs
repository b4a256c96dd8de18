//! `coin-value serve | healthcheck | count IMAGE | synth`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use fargo_runtime::cli::{self, Common};

#[derive(Debug, clap::Parser)]
#[command(
    name = "coin-value",
    version,
    about = "Coin values from a photo of US coins"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    #[command(flatten)]
    Common(Common),
    /// Count the coins of one picture and print the result as JSON (`total_cents`, `coins`).
    Count {
        /// JPEG, PNG or WebP file.
        image: PathBuf,
        /// Also write the picture with every coin circled and labelled (JPEG).
        #[arg(long)]
        annotate: Option<PathBuf>,
        #[command(flatten)]
        config: cli::ConfigArgs,
    },
    /// Write seeded synthetic test photos (JPEG) and a truth.json listing their totals.
    Synth {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How many photos.
        #[arg(long, default_value_t = 10)]
        count: u64,
        #[arg(long, default_value_t = 2000)]
        width: u32,
        #[arg(long, default_value_t = 1500)]
        height: u32,
    },
}

/// Entry point of the `coin-value` binary (and of `fargo sidecar coin-value`).
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli: Cli = match cli::parse(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::Common(c) => {
            cli::run_common::<crate::Config, _, _, _>(c, |l, cfg, s| crate::serve(l, cfg, s.wait()))
        }
        Cmd::Count {
            image,
            annotate,
            config,
        } => count(&image, annotate.as_deref(), &config),
        Cmd::Synth {
            out,
            seed,
            count,
            width,
            height,
        } => synth(&out, seed, count, width, height),
    }
}

fn count(
    image: &std::path::Path,
    annotate: Option<&std::path::Path>,
    config: &cli::ConfigArgs,
) -> ExitCode {
    let config: crate::Config = match config.load() {
        Ok(c) => c,
        Err(e) => return cli::config_failure("coin-value", &e),
    };
    let bytes = match std::fs::read(image) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("coin-value: cannot read {}: {e}", image.display());
            return ExitCode::FAILURE;
        }
    };
    if bytes.len() > config.coins.max_image_bytes {
        eprintln!(
            "coin-value: {} is {} bytes; at most {} are accepted (coins.max_image_bytes)",
            image.display(),
            bytes.len(),
            config.coins.max_image_bytes
        );
        return ExitCode::FAILURE;
    }
    let result = match crate::count(&bytes, &config.coins.limits(), annotate.is_some()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("coin-value: {}: {e}", image.display());
            return ExitCode::FAILURE;
        }
    };
    if let (Some(path), Some(jpeg)) = (annotate, &result.annotated_jpeg)
        && let Err(e) = std::fs::write(path, jpeg)
    {
        eprintln!("coin-value: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    match serde_json::to_string_pretty(&result) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("coin-value: {e}");
            ExitCode::FAILURE
        }
    }
}

fn synth(out: &std::path::Path, seed: u64, count: u64, width: u32, height: u32) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!("coin-value: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let mut truth = Vec::new();
    for s in seed..seed + count {
        let photo = crate::synth::render(s, width, height);
        let name = format!("synth-{s:04}.jpg");
        if let Err(e) = std::fs::write(out.join(&name), &photo.jpeg) {
            eprintln!("coin-value: cannot write {name}: {e}");
            return ExitCode::FAILURE;
        }
        println!("{name}: {}", photo.describe());
        truth.push(serde_json::json!({
            "file": name,
            "seed": s,
            "total_cents": photo.total_cents,
            "coins": photo.coins.len(),
            "description": photo.describe(),
        }));
    }
    let path = out.join("truth.json");
    match serde_json::to_vec_pretty(&truth).map(|j| std::fs::write(&path, j)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("coin-value: cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("coin-value: {e}");
            ExitCode::FAILURE
        }
    }
}
