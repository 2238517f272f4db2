/// One state change told to the service manager through `sd_notify(3)`, rendered in one place.
public enum SystemdMessage: Sendable, Hashable {
    /// `READY=1`: start-up or a reload finished.
    case ready
    /// `STATUS=…`: the one-line summary `systemctl status` shows (line breaks become spaces).
    case status(String)
    /// `RELOADING=1` with the `CLOCK_MONOTONIC` time in microseconds, which `Type=notify-reload` needs.
    case reloading(monotonicMicroseconds: UInt64)
    /// `STOPPING=1`.
    case stopping
    /// `WATCHDOG=1`: the scheduler queue is alive.
    case watchdog
    /// `EXTEND_TIMEOUT_USEC=…`: start-up needs more time.
    case extendTimeout(microseconds: UInt64)
    /// `ERRNO=…`: why the daemon could not start.
    case errno(Int32)

    /// The `KEY=value` assignments of this message.
    public var assignments: [String] {
        switch self {
        case .ready: ["READY=1"]
        case .status(let line): ["STATUS=" + String(line.map { $0.isNewline ? " " : $0 })]
        case .reloading(let microseconds): ["RELOADING=1", "MONOTONIC_USEC=\(microseconds)"]
        case .stopping: ["STOPPING=1"]
        case .watchdog: ["WATCHDOG=1"]
        case .extendTimeout(let microseconds): ["EXTEND_TIMEOUT_USEC=\(microseconds)"]
        case .errno(let number): ["ERRNO=\(number)"]
        }
    }

    /// The datagram for several messages sent together: their assignments, one per line.
    public static func render(_ messages: [SystemdMessage]) -> String {
        messages.flatMap(\.assignments).joined(separator: "\n")
    }
}
