fn main() {
    std::process::exit(rimg::cli::main());
}
