// swift-format-ignore: AlwaysUseLowerCamelCase
// The wire names are the JSON keys (SPEC §8).

extension API {
    /// `GET /v1/tokens/{instance}?format=apply`: the headers to send on API requests and the exposed values.
    public struct ApplyBody: Codable, Sendable, Hashable {
        public var instance: String
        public var headers: [String: String]
        public var values: [String: String]
        public var expires_at: Int
        public var expires_in: Int

        public init(instance: String, headers: [String: String], values: [String: String], expires_at: Int, expires_in: Int) {
            self.instance = instance
            self.headers = headers
            self.values = values
            self.expires_at = expires_at
            self.expires_in = expires_in
        }
    }
}
