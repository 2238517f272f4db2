extension Unicode.Scalar {
    /// `0-9`, `A-Z` or `a-z`.
    var isASCIIAlphanumeric: Bool {
        (0x30...0x39).contains(value) || (0x41...0x5A).contains(value) || (0x61...0x7A).contains(value)
    }
}
