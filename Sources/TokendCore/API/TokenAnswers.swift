import Foundation

/// The 200 answers already made from one token, so that callers asking many times a second share one body instead of
/// each rendering it: an answer stays right for as long as its format and `expires_in` do (under a second for JSON; the
/// token's whole life for `raw` and `header`).
///
/// Belongs to one instance's one token (a new token, a new `TokenAnswers`); whether the caller may read the token and
/// whether it is still servable is decided before.
public struct TokenAnswers: Sendable {
    private var made: [(format: TokenFormat, expiresIn: Int, response: APIResponse)] = []

    public init() {}

    /// What ``APIRouter/tokenResponse(name:token:format:now:)`` answers, from the last one made when it is the same.
    public mutating func answer(name: String, token: IssuedToken, format: TokenFormat, now: Date, router: APIRouter) -> APIResponse {
        let expiresIn = format == .json ? APIRouter.expiresIn(token, now: now) : 0
        for entry in made where entry.format == format && entry.expiresIn == expiresIn {
            return entry.response
        }
        let response = router.tokenResponse(name: name, token: token, format: format, now: now)
        if let index = made.firstIndex(where: { $0.format == format }) {
            made[index] = (format, expiresIn, response)
        } else {
            made.append((format, expiresIn, response))
        }
        return response
    }
}
