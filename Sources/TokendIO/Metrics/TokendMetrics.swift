import Foundation
import Prometheus
import TokendCore

/// tokend's Prometheus metrics through swift-prometheus: per-instance gauges set from the published snapshot at
/// scrape time, and counters for refresh results and socket requests. Labels are bounded: instance names come from
/// the config, endpoints and results are fixed sets, status codes are the API's.
public final class TokendMetrics: Sendable {
    private let registry = PrometheusCollectorRegistry()

    public init() {}

    /// A refresh attempt ended: `result` is `success`, `transient` or `permanent`.
    public func refreshFinished(instance: String, result: String) {
        registry.makeCounter(
            name: "tokend_refreshes_total",
            labels: [("instance", instance), ("result", result)],
            help: "Token fetches by instance and result."
        ).increment()
    }

    /// A socket request was answered.
    public func requestAnswered(endpoint: String, status: Int) {
        registry.makeCounter(
            name: "tokend_socket_requests_total",
            labels: [("endpoint", endpoint), ("status", String(status))],
            help: "Socket API requests by endpoint and status."
        ).increment()
    }

    /// The instance is gone: its series are dropped.
    public func instanceRemoved(_ instance: String) {
        for gauge in gauges(instance) { registry.unregisterGauge(gauge) }
        for result in ["success", "transient", "permanent"] {
            registry.unregisterCounter(
                registry.makeCounter(
                    name: "tokend_refreshes_total",
                    labels: [("instance", instance), ("result", result)],
                    help: "Token fetches by instance and result."
                )
            )
        }
    }

    /// The text exposition format, with the per-instance gauges set for `now`.
    public func render(_ instances: [(name: String, machine: InstanceStateMachine)], now: Date) -> [UInt8] {
        for (name, machine) in instances {
            let gauges = self.gauges(name)
            let token = machine.servableToken(at: now)
            gauges[0].set(to: token.map { max(0, $0.expiresAt.timeIntervalSince(now)) } ?? 0)
            gauges[1].set(to: machine.outageBudget(at: now))
            gauges[2].set(to: Double(machine.consecutiveFailures))
            gauges[3].set(to: token == nil ? 0 : 1)
        }
        return registry.emitToBuffer()
    }

    private func gauges(_ instance: String) -> [Gauge] {
        let labels = [("instance", instance)]
        return [
            registry.makeGauge(name: "tokend_token_expires_in_seconds", labels: labels, help: "Seconds until the served token expires (0: none)."),
            registry.makeGauge(name: "tokend_outage_budget_seconds", labels: labels, help: "How long the provider may stay down before the token is no longer served."),
            registry.makeGauge(name: "tokend_consecutive_failures", labels: labels, help: "Failed fetches in a row."),
            registry.makeGauge(name: "tokend_token_valid", labels: labels, help: "1 when a token is being served."),
        ]
    }
}
