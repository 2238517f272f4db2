import CSystemd
import TokendCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Tells the service manager about the daemon's state.
///
/// The real one is ``SystemdNotifier``; tests record.
public protocol ServiceNotifier: Sendable {
    /// Sends `messages` together, in one datagram.
    func notify(_ messages: [SystemdMessage])
}

extension ServiceNotifier {
    public func notify(_ messages: SystemdMessage...) {
        notify(messages)
    }
}

/// `sd_notify(3)` through libsystemd; a no-op when `NOTIFY_SOCKET` is unset.
public struct SystemdNotifier: ServiceNotifier {
    public init() {}

    public func notify(_ messages: [SystemdMessage]) {
        _ = sd_notify(0, SystemdMessage.render(messages))
    }

    /// The listening sockets systemd passed (socket activation): `LISTEN_FDS` for this process, starting at fd 3.
    ///
    /// Unsets the variables so that child processes do not inherit them.
    public static func listenDescriptors() -> [(descriptor: Int32, name: String)] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count > 0 else { return [] }
        defer {
            for index in 0..<Int(count) { free(names?[index]) }
            free(names)
        }
        // `FileDescriptorName=`, or the socket unit's name when it sets none ("unknown" without LISTEN_FDNAMES).
        return (0..<count).map { index in
            (SD_LISTEN_FDS_START + index, names?[Int(index)].map { String(cString: $0) } ?? "unknown")
        }
    }

    /// Seconds between watchdog pings (half of `WATCHDOG_USEC`), or nil when the watchdog is off.
    public static func watchdogPingInterval() -> Double? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return Double(usec) / 2_000_000
    }
}
