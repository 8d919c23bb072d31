//! `gen-body`: writes one generated request body to stdout, for load tests.
//!
//! ```text
//! cargo run -p bbr-benches --bin gen-body -- --shape chat --position first --size 256KiB > body.json
//! ```

use std::io::Write;
use std::process::ExitCode;

use bbr_benches::{BodySpec, MIN_SIZE, MODEL, Position, Shape, parse_size};
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
    /// Model name to put in place of the default one (the body is built
    /// so that it still has exactly `--size` bytes).
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
    let bytes = parse_size(text)?;
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
    let Some(model) = args.model else {
        return write(&BodySpec::new(shape, position, args.size).build());
    };
    let Ok(encoded) = serde_json::to_string(&model) else {
        return ExitCode::FAILURE;
    };
    let from = format!("\"model\":\"{MODEL}\"");
    let to = format!("\"model\":{encoded}");
    // Built larger or smaller by the difference, so the body keeps its size.
    let Some(built) = (args.size + from.len())
        .checked_sub(to.len())
        .filter(|&n| n >= MIN_SIZE)
    else {
        eprintln!("gen-body: --size too small for that model name");
        return ExitCode::FAILURE;
    };
    let body = BodySpec::new(shape, position, built).build();
    let body = String::from_utf8(body.to_vec())
        .expect("generated bodies are UTF-8")
        .replacen(&from, &to, 1);
    if !body.contains(&to) || body.len() != args.size {
        eprintln!("gen-body: the top-level model was not replaced");
        return ExitCode::FAILURE;
    }
    write(body.as_bytes())
}

fn write(body: &[u8]) -> ExitCode {
    match std::io::stdout().lock().write_all(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gen-body: {error}");
            ExitCode::FAILURE
        }
    }
}
