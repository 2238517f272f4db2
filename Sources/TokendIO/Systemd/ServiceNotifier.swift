import CSystemd

/// Tells the service manager about the daemon's state (`READY=1`, `STATUS=…`, `WATCHDOG=1`, …).
public protocol ServiceNotifier: Sendable {
    func notify(_ message: String)
}

/// `sd_notify(3)` through libsystemd; a no-op when `NOTIFY_SOCKET` is unset.
public struct SystemdNotifier: ServiceNotifier {
    public init() {}

    public func notify(_ message: String) {
        _ = sd_notify(0, message)
    }

    /// The listening sockets systemd passed (socket activation): `LISTEN_FDS` for this process, starting at fd 3.
    ///
    /// Unsets the variables so that child processes do not inherit them.
    public static func listenDescriptors() -> [Int32] {
        let count = sd_listen_fds(1)
        guard count > 0 else { return [] }
        return (0..<count).map { SD_LISTEN_FDS_START + $0 }
    }

    /// Seconds between watchdog pings (half of `WATCHDOG_USEC`), or nil when the watchdog is off.
    public static func watchdogPingInterval() -> Double? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return Double(usec) / 2_000_000
    }
}
