import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

/// A fleet database call that failed: where the database is, what was being done and why, on one line.
///
/// The description never holds the password: the reasons come from the server's message or the connection's error, and
/// any occurrence of the password is masked all the same.
public struct PostgresFleetError: Error, CustomStringConvertible, Sendable, Hashable {
    /// ``FleetDatabase/displayName``: user, host or socket, and database name.
    public var database: String
    /// What was being done: `open`, `read`, `lease`, `publish`, `release`, `listen`.
    public var operation: String
    /// Why it failed, in words.
    public var reason: String

    public init(database: String, operation: String, reason: String) {
        self.database = database
        self.operation = operation
        self.reason = reason
    }

    public var description: String { "fleet database \(database): \(operation) failed: \(reason)" }

    /// Words for an error from PostgresNIO, NIO or NIOSSL, with `secret` (the password) masked if it shows up.
    static func reason(for error: any Error, masking secret: String?) -> String {
        let text = describe(error)
        guard let secret, !secret.isEmpty else { return text }
        return text.replacingOccurrences(of: secret, with: "<redacted>")
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case let error as PostgresFleetError:
            return error.reason
        case let error as PSQLError:
            return describe(error)
        case let error as PostgresTransactionError:
            if let cause = error.beginError ?? error.closureError ?? error.commitError { return describe(cause) }
            return "transaction failed"
        case is CancellationError:
            return "cancelled"
        case let error as NIOSSLError:
            // BoringSSL's "…:CERTIFICATE_VERIFY_FAILED at …/handshake.cc:320" says no more than this.
            if "\(error)".contains("CERTIFICATE_VERIFY_FAILED") { return "TLS: the server's certificate did not verify (ca_file)" }
            return "TLS: \(error)"
        case let error as NIOSSLExtraError:
            if "\(error)".contains("failedToValidateHostname") {
                return "TLS: the server's certificate does not name the host (verify-full)"
            }
            return "TLS: \(error)"
        case let error as NIOConnectionError:
            if let lookup = error.dnsAError ?? error.dnsAAAAError { return "cannot resolve \(error.host): \(lookup)" }
            let failures = error.connectionErrors.map { "\($0.target.ipAddress ?? "\($0.target)"): \(describe($0.error))" }
            return failures.isEmpty ? "no address for \(error.host)" : failures.joined(separator: "; ")
        case let error as IOError:
            // "connection reset (error set): Connection refused (errno: 111)" → "Connection refused".
            return String(cString: strerror(error.errnoCode))
        default:
            return String(describing: error)
        }
    }

    private static func describe(_ error: PSQLError) -> String {
        if let message = error.serverInfo?[.message] {
            let state = error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? ""
            return "the server said: \(message)\(state)"
        }
        let cause = error.underlying.map { ": " + describe($0) } ?? ""
        switch error.code {
        case .sslUnsupported: return "the server does not offer TLS (sslmode requires it)"
        case .connectionError: return "cannot connect" + cause
        case .serverClosedConnection: return "the server closed the connection" + cause
        case .clientClosedConnection: return "the connection was closed" + cause
        case .uncleanShutdown: return "the connection ended without a TLS close" + cause
        case .saslError, .unsupportedAuthMechanism, .authMechanismRequiresPassword:
            return "authentication failed (\(error.code))" + cause
        case .queryCancelled: return "the query was cancelled"
        case .failedToAddSSLHandler: return "TLS setup failed" + cause
        default: return "\(error.code)" + cause
        }
    }
}
