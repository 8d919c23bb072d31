//! `gen-body`: writes one generated request body to stdout, for load tests.
//!
//! ```text
//! cargo run -p bbr-benches --bin gen-body -- --shape chat --position first --size 256KiB > body.json
//! ```

use std::io::Write;
use std::process::ExitCode;

use bbr_benches::{BodySpec, KIB, MIB, MIN_SIZE, MODEL, Position, Shape};
use clap::{Parser, ValueEnum};

/// Writes a deterministic chat, completions, prose or tools body of the given size.
#[derive(Debug, Parser)]
#[command(name = "gen-body")]
struct Args {
    /// Body shape.
    #[arg(long, value_enum, default_value_t = ShapeArg::Chat)]
    shape: ShapeArg,
    /// Where the top-level `model` goes.
    #[arg(long, value_enum, default_value_t = PositionArg::First)]
    position: PositionArg,
    /// Size: `1024`, `16KiB`, `1MiB`.
    #[arg(long, default_value = "1KiB", value_parser = size)]
    size: usize,
    /// Model name to put in place of the default one (the size changes by
    /// the difference in length).
    #[arg(long)]
    model: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ShapeArg {
    Chat,
    Completions,
    Prose,
    Tools,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PositionArg {
    First,
    Last,
}

fn size(text: &str) -> Result<usize, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: usize = number
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    let bytes = match unit {
        "" | "B" => number,
        "KiB" => number * KIB,
        "MiB" => number * MIB,
        _ => return Err(format!("unknown unit in {text:?} (B, KiB, MiB)")),
    };
    if bytes < MIN_SIZE {
        return Err(format!("size must be at least {MIN_SIZE} bytes"));
    }
    Ok(bytes)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let shape = match args.shape {
        ShapeArg::Chat => Shape::Chat,
        ShapeArg::Completions => Shape::Completions,
        ShapeArg::Prose => Shape::Prose,
        ShapeArg::Tools => Shape::Tools,
    };
    let position = match args.position {
        PositionArg::First => Position::First,
        PositionArg::Last => Position::Last,
    };
    let mut body = BodySpec::new(shape, position, args.size).build().to_vec();
    if let Some(model) = args.model {
        let Ok(encoded) = serde_json::to_string(&model) else {
            return ExitCode::FAILURE;
        };
        let from = format!("\"model\":\"{MODEL}\"");
        let to = format!("\"model\":{encoded}");
        body = String::from_utf8(body)
            .expect("generated bodies are UTF-8")
            .replacen(&from, &to, 1)
            .into_bytes();
    }
    match std::io::stdout().lock().write_all(&body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gen-body: {error}");
            ExitCode::FAILURE
        }
    }
}
