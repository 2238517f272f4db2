import Foundation

/// Parses durations written as `"250ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"2d"` (or a bare number of seconds).
public enum DurationParser {
    /// The duration in seconds, or nil when the text is not a duration.
    public static func seconds(from text: String) -> Double? {
        let text = text.trimmingCharacters(in: .whitespaces)
        guard !text.isEmpty else { return nil }
        if let plain = Double(text), plain >= 0, plain.isFinite { return plain }
        var total = 0.0
        var number = ""
        var unit = ""
        var sawPart = false
        func flush() -> Bool {
            guard let value = Double(number), value >= 0 else { return false }
            let scale: Double
            switch unit {
            case "ms": scale = 0.001
            case "s": scale = 1
            case "m", "min": scale = 60
            case "h": scale = 3600
            case "d": scale = 86_400
            default: return false
            }
            total += value * scale
            number = ""
            unit = ""
            sawPart = true
            return true
        }
        for character in text {
            if character.isNumber || character == "." {
                if !unit.isEmpty {
                    guard flush() else { return nil }
                }
                number.append(character)
            } else if character.isLetter {
                guard !number.isEmpty else { return nil }
                unit.append(character)
            } else {
                return nil
            }
        }
        guard !number.isEmpty, !unit.isEmpty, flush(), sawPart else { return nil }
        return total
    }
}
