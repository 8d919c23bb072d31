//! `extract [--chunk N] [--policy reject|first-wins|last-wins] FILE...`:
//! prints the verdict for each file as one JSON line (see `bbr_core::cli`).

fn main() {
    let status = bbr_core::cli::run(
        std::env::args().skip(1),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(status);
}
