import Foundation

/// The outbound HTTP proxy for token and discovery requests: `[http] proxy` in `tokend.toml`, else `HTTPS_PROXY` (or
/// `https_proxy`) from the environment; hosts in `[http] no_proxy` or `NO_PROXY` go direct.
///
/// HTTPS requests go through the proxy in a CONNECT tunnel, so the proxy never sees the request.
public struct ProxySettings: Sendable, Hashable {
    public var host: String
    public var port: Int
    /// `NO_PROXY` entries: `*`, a host name (matching itself and its subdomains, with or without a leading dot) or an
    /// IP address.
    public var noProxy: [String]

    public init(host: String, port: Int, noProxy: [String] = []) {
        self.host = host
        self.port = port
        self.noProxy = noProxy
    }

    /// Parses `http://host:port` (or `host:port`); nil when it is not one.
    ///
    /// Credentials in the URL are refused (they would end up in messages).
    public static func parse(_ url: String) -> ProxySettings? {
        let text = url.contains("://") ? url : "http://" + url
        guard let components = URLComponents(string: text), components.scheme?.lowercased() == "http",
            let host = components.host, !host.isEmpty, components.user == nil, components.password == nil
        else { return nil }
        return ProxySettings(host: host, port: components.port ?? 80)
    }

    /// The proxy in force: the daemon settings' first, then the environment's.
    ///
    /// A malformed `HTTPS_PROXY` is ignored (with the reason returned for a log line).
    public static func resolve(
        setting: String?,
        noProxySetting: [String]?,
        environment: [String: String]
    ) -> (proxy: ProxySettings?, warning: String?) {
        let fromEnvironment = environment["HTTPS_PROXY"] ?? environment["https_proxy"]
        guard let text = setting ?? fromEnvironment, !text.isEmpty else { return (nil, nil) }
        guard var proxy = parse(text) else {
            return (nil, "ignoring HTTPS_PROXY: expected http://host:port without credentials")
        }
        let noProxyText = environment["NO_PROXY"] ?? environment["no_proxy"] ?? ""
        proxy.noProxy =
            noProxySetting
            ?? noProxyText.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return (proxy, nil)
    }

    /// Whether a request to `host` goes through the proxy.
    public func applies(to host: String) -> Bool {
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        for entry in noProxy {
            var pattern = entry.lowercased()
            if pattern == "*" { return false }
            if pattern.hasPrefix("*.") { pattern.removeFirst() }
            if pattern.hasPrefix(".") { pattern.removeFirst() }
            if let colon = pattern.lastIndex(of: ":"), !pattern.contains("]"), pattern.filter({ $0 == ":" }).count == 1 {
                pattern = String(pattern[..<colon])
            }
            pattern = pattern.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            if host == pattern || host.hasSuffix("." + pattern) { return false }
        }
        return true
    }
}
