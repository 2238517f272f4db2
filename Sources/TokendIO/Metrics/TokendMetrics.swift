import Foundation
import NIOConcurrencyHelpers
import Prometheus
import TokendCore

/// tokend's Prometheus metrics.
///
/// Socket request counters (a small fixed set of label values) live in a swift-prometheus registry. The per-instance
/// families are kept and rendered here: swift-prometheus copies a family's whole label-set dictionary for every new
/// series (`MetricFamily.adding`), so registering one series per instance is quadratic in the number of instances.
/// Instance names are validated config names; label values are escaped anyway.
public final class TokendMetrics: Sendable {
    private let registry = PrometheusCollectorRegistry()
    /// Refresh results by instance: success, transient, permanent.
    private let refreshes = NIOLockedValueBox<[String: RefreshCounts]>([:])
    private let requestCounters = NIOLockedValueBox<[RequestKey: Counter]>([:])

    private struct RefreshCounts {
        var success = 0
        var transient = 0
        var permanent = 0
    }

    private struct RequestKey: Hashable {
        var endpoint: String
        var status: Int
    }

    /// `tokend_socket_requests_total`, one series per endpoint and status.
    ///
    /// Computed, since the descriptor type is not `Sendable` and so cannot be a stored static.
    private static var socketRequests: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "tokend",
            subsystem: "socket",
            metricName: "requests",
            unitName: "total",
            helpText: "Socket API requests by endpoint and status."
        )
    }

    /// The series nearly every request counts (`GET /v1/tokens/NAME` answered 200), made once: no lock and no
    /// dictionary lookup per served token.
    private let tokensServed: Counter

    private let fleetTokensFetched: Counter
    private let fleetTokensShared: Counter
    private let fleetErrors: Counter
    private let fleetRowsRefused: Counter
    private let fleetUp: Gauge
    private let fleetCalls: Counter
    private let fleetCallSeconds: Counter

    public init() {
        fleetTokensFetched = registry.makeCounter(
            name: "tokend_fleet_tokens_fetched_total",
            help: "Tokens this host fetched under the fleet's lease and shared."
        )
        fleetTokensShared = registry.makeCounter(
            name: "tokend_fleet_tokens_shared_total",
            help: "Tokens taken from the fleet instead of the provider: provider requests saved."
        )
        fleetErrors = registry.makeCounter(name: "tokend_fleet_errors_total", help: "Fleet database calls that failed.")
        fleetRowsRefused = registry.makeCounter(
            name: "tokend_fleet_rows_refused_total",
            help: "Fleet rows that did not open with this host's key."
        )
        fleetCalls = registry.makeCounter(name: "tokend_fleet_calls_total", help: "Fleet database calls made.")
        fleetCallSeconds = registry.makeCounter(
            name: "tokend_fleet_call_seconds_total",
            help: "Time spent in fleet database calls, in seconds (divided by tokend_fleet_calls_total: the mean latency)."
        )
        fleetUp = registry.makeGauge(name: "tokend_fleet_up", help: "1 while the fleet's database is reachable and the key matches.")
        tokensServed = registry.makeCounter(
            descriptor: Self.socketRequests,
            labels: [("endpoint", "token"), ("status", "200")]
        )
        requestCounters.withLockedValue { $0[RequestKey(endpoint: "token", status: 200)] = tokensServed }
    }

    /// A refresh attempt ended: `result` is `success`, `transient` or `permanent`.
    public func refreshFinished(instance: String, result: String) {
        refreshes.withLockedValue { counts in
            switch result {
            case "success": counts[instance, default: RefreshCounts()].success += 1
            case "transient": counts[instance, default: RefreshCounts()].transient += 1
            default: counts[instance, default: RefreshCounts()].permanent += 1
            }
        }
    }

    /// A socket request was answered.
    public func requestAnswered(endpoint: String, status: Int) {
        if status == 200, endpoint == "token" {
            tokensServed.increment()
            return
        }
        let key = RequestKey(endpoint: endpoint, status: status)
        let counter = requestCounters.withLockedValue { counters in
            if let known = counters[key] { return known }
            let made = registry.makeCounter(
                descriptor: Self.socketRequests,
                labels: [("endpoint", endpoint), ("status", String(status))]
            )
            counters[key] = made
            return made
        }
        counter.increment()
    }

    /// A token this host fetched under the fleet's lease and wrote for the others.
    public func fleetFetched(instance: String) {
        fleetTokensFetched.increment()
    }

    /// A token taken from the fleet's row: a provider request this host did not make.
    public func fleetShared(instance: String) {
        fleetTokensShared.increment()
    }

    /// A fleet store call (or the calls of one step, such as open and listen) took `seconds`.
    public func fleetCall(seconds: Double) {
        fleetCalls.increment()
        fleetCallSeconds.increment(by: seconds)
    }

    /// A fleet store call failed.
    public func fleetError() {
        fleetErrors.increment()
    }

    /// A fleet row did not open with this host's key (or was not for this request).
    public func fleetRowRefused() {
        fleetRowsRefused.increment()
    }

    /// Whether the fleet's database is reachable and the key matches.
    public func fleetHealth(_ connected: Bool) {
        fleetUp.set(Double(connected ? 1 : 0))
    }

    /// The instance is gone: its series are dropped.
    public func instanceRemoved(_ instance: String) {
        _ = refreshes.withLockedValue { $0.removeValue(forKey: instance) }
    }

    /// The `Content-Type` of ``render(_:now:)``'s text, wherever it is served.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// The text exposition format (version 0.0.4), with the per-instance gauges computed for `now`.
    public func render(_ instances: [(name: String, machine: InstanceStateMachine)], now: Date) -> [UInt8] {
        var output = registry.emitToBuffer()
        let sorted = instances.sorted { $0.name < $1.name }
        let counts = refreshes.withLockedValue { $0 }
        var text = ""
        text.reserveCapacity(256 + sorted.count * 400)
        func family(_ name: String, _ type: String, _ help: String, _ value: (InstanceStateMachine) -> Double) {
            text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (instance, machine) in sorted {
                text += "\(name){instance=\"\(Self.escape(instance))\"} \(Self.format(value(machine)))\n"
            }
        }
        family("tokend_token_expires_in_seconds", "gauge", "Seconds until the served token expires (0: none).") {
            $0.servableToken(at: now).map { max(0, $0.expiresAt.timeIntervalSince(now)) } ?? 0
        }
        family("tokend_outage_budget_seconds", "gauge", "How long the provider may stay down before the token is no longer served.") {
            $0.outageBudget(at: now)
        }
        family("tokend_consecutive_failures", "gauge", "Failed fetches in a row.") { Double($0.consecutiveFailures) }
        family("tokend_token_valid", "gauge", "1 when a token is being served.") { $0.servableToken(at: now) == nil ? 0 : 1 }
        text += "# HELP tokend_refreshes_total Token fetches by instance and result.\n# TYPE tokend_refreshes_total counter\n"
        for (instance, _) in sorted {
            guard let count = counts[instance] else { continue }
            let label = Self.escape(instance)
            for (result, value) in [("success", count.success), ("transient", count.transient), ("permanent", count.permanent)]
            where value > 0 {
                text += "tokend_refreshes_total{instance=\"\(label)\",result=\"\(result)\"} \(value)\n"
            }
        }
        output += text.utf8
        return output
    }

    /// A label value escaped as the exposition format wants: backslash, double quote and line feed.
    static func escape(_ value: String) -> String {
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else {
            return value
        }
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// Whole numbers without a fraction, others as Swift prints a Double (shortest round-trip).
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int(value)) }
        return String(value)
    }
}
