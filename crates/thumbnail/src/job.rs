//! `thumbnail job`: the on-demand container. Extracts, writes, exits: 0 on success,
//! otherwise non-zero with one line on stderr saying why.
//!
//! Takes flags, or for the original task definition the environment variables
//! `INPUT_VIDEO_FILE_URL`, `POSITION_TIME_DURATION`, `OUTPUT_S3_PATH` (`bucket/prefix`
//! or any URI) and `OUTPUT_THUMBS_FILE_NAME`.

use std::process::ExitCode;

use fargo_runtime::cli::{ConfigArgs, config_failure};
use fargo_runtime::storage::{Location, Storage};
use tonic::Code;

use crate::encode::ImageFormat;
use crate::engine::{Fit, Mode, Request, Size};
use crate::position::Position;
use crate::{Config, ThumbError, Thumbnailer};

/// Exit codes, so an invoker can tell a bad input from a broken environment.
pub mod exit {
    /// Flags or environment missing or malformed.
    pub const USAGE: u8 = 2;
    /// The input is missing, not a video, corrupt, or the position is past its end.
    pub const BAD_INPUT: u8 = 3;
    /// Storage (reading or writing) or anything else failed.
    pub const FAILED: u8 = 1;
}

#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The video: a path, file://, s3://bucket/key or http(s):// URL.
    #[arg(long, env = "INPUT_VIDEO_FILE_URL")]
    pub input: Option<String>,
    /// Position(s): seconds (12.5), HH:MM:SS.ms, or a percentage (10%); comma-separated.
    #[arg(long = "at", env = "POSITION_TIME_DURATION", value_delimiter = ',')]
    pub at: Vec<String>,
    /// Where to write: an image path/URI for one position, a folder/prefix for several.
    #[arg(long, short = 'o')]
    pub output: Option<String>,
    /// Output folder as the original task definition gives it (`bucket/prefix` means S3).
    #[arg(long, env = "OUTPUT_S3_PATH", hide = true)]
    pub output_s3_path: Option<String>,
    /// Output file name inside `OUTPUT_S3_PATH`.
    #[arg(long, env = "OUTPUT_THUMBS_FILE_NAME", hide = true)]
    pub output_file_name: Option<String>,
    /// png, jpeg or webp; by default from the output's extension, else png.
    #[arg(long)]
    pub format: Option<String>,
    /// accurate (the exact frame), keyframe (fast) or representative (skip black frames).
    #[arg(long, default_value = "accurate")]
    pub mode: String,
    #[arg(long, default_value_t = 0)]
    pub width: u32,
    #[arg(long, default_value_t = 0)]
    pub height: u32,
    /// With both width and height: contain (fit inside) or cover (fill and crop).
    #[arg(long, default_value = "contain")]
    pub fit: String,
    /// JPEG/WebP quality 1-100.
    #[arg(long, default_value_t = 0)]
    pub quality: u8,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("thumbnail job: {msg}");
    ExitCode::from(exit::USAGE)
}

/// Resolves the output URI from the flags and the original environment contract.
pub fn output_uri(args: &JobArgs, format: ImageFormat) -> Option<String> {
    if let Some(o) = &args.output {
        return Some(o.clone());
    }
    let base = args.output_s3_path.as_deref()?.trim_end_matches('/');
    let base = if base.contains("://") || base.starts_with('/') {
        base.to_owned()
    } else {
        format!("s3://{base}")
    };
    let name = args
        .output_file_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("thumbnail.{}", format.extension()));
    Location::parse(&base)
        .ok()
        .map(|l| l.join(&name).to_string())
}

/// Runs the job; the process's exit code.
pub fn run(args: JobArgs) -> ExitCode {
    let config: Config = match args.config.load() {
        Ok(c) => c,
        Err(e) => return config_failure("thumbnail job", &e),
    };
    let Some(input) = args.input.clone().filter(|s| !s.is_empty()) else {
        return usage("no input: pass --input URI or set INPUT_VIDEO_FILE_URL");
    };
    if args.at.is_empty() {
        return usage("no position: pass --at POSITION or set POSITION_TIME_DURATION");
    }
    let positions = match args
        .at
        .iter()
        .map(|p| Position::parse(p).map(|pos| (p.clone(), pos)))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let ext_format = args
        .output
        .as_deref()
        .or(args.output_file_name.as_deref())
        .and_then(|o| std::path::Path::new(o).extension()?.to_str())
        .and_then(ImageFormat::from_name);
    let format = match args.format.as_deref() {
        Some(f) => match ImageFormat::from_name(f) {
            Some(f) => f,
            None => return usage(format!("--format `{f}`: use png, jpeg or webp")),
        },
        None => ext_format.unwrap_or_default(),
    };
    let Some(output) = output_uri(&args, format) else {
        return usage(
            "no output: pass --output URI or set OUTPUT_S3_PATH (and OUTPUT_THUMBS_FILE_NAME)",
        );
    };
    let mode = match args.mode.as_str() {
        "accurate" => Mode::Accurate,
        "keyframe" => Mode::Keyframe,
        "representative" => Mode::Representative,
        m => {
            return usage(format!(
                "--mode `{m}`: use accurate, keyframe or representative"
            ));
        }
    };
    let fit = match args.fit.as_str() {
        "contain" => Fit::Contain,
        "cover" => Fit::Cover,
        f => return usage(format!("--fit `{f}`: use contain or cover")),
    };
    let req = Request {
        positions,
        mode,
        format,
        quality: args.quality,
        size: Size {
            width: args.width,
            height: args.height,
            fit,
        },
        sprite: None,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("thumbnail job: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let thumbnailer = Thumbnailer::new(&config.thumbnail, Storage::from_env());
    let result = rt.block_on(async {
        let out = thumbnailer.extract(&input, req).await?;
        thumbnailer.write(&out, &output, format).await
    });
    match result {
        Ok(w) => {
            for uri in w.thumbnails {
                println!("{uri}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("thumbnail job: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Bad input (missing, not a video, past the end) apart from everything else.
pub fn exit_code(e: &ThumbError) -> u8 {
    match e.code() {
        Code::InvalidArgument | Code::NotFound | Code::OutOfRange => exit::BAD_INPUT,
        _ => exit::FAILED,
    }
}
