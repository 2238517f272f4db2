extension StringProtocol {
    /// Without leading and trailing spaces and tabs (and a stray CR at the end).
    ///
    /// Config loading calls this for every line and template variable, too often for Foundation's
    /// `trimmingCharacters(in:)` (BENCHMARKS.md, "Figures behind code comments").
    func trimmingBlanks() -> SubSequence {
        var result = self[...].drop { $0 == " " || $0 == "\t" }
        while let last = result.last, last == " " || last == "\t" || last == "\r" {
            result = result.dropLast()
        }
        return result
    }
}
