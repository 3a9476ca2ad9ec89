import ArgumentParser
struct Scalpel: ParsableCommand { func run() throws { print("scalpel") } }
Scalpel.main()
