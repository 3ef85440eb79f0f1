import type { PolicySetInput } from "../../shared/config/index.ts";

/**
 * The ingress policy of the example shop: customers sign in at the IdP, staff come from the office
 * network, other services call in over mTLS. Put it under `gateways.ingress.policy` in weft.config.ts;
 * policy.test.ts beside it proves what it allows, and fails when a rule here is weakened.
 */
export const shopPolicy = {
  authn: {
    jwt: [
      {
        issuer: "https://issuer.weft.test",
        jwksUri: "https://issuer.weft.test/.well-known/jwks.json",
        audiences: ["shop"],
        outputClaimToHeaders: [{ header: "x-shop-user", claim: "sub" }],
      },
    ],
  },
  authz: [
    // Nobody reaches the admin API from outside, however the path is spelled.
    { name: "no-admin-from-outside", action: "DENY", rules: [{ to: [{ paths: ["/admin*"] }], from: [{ notIpBlocks: ["10.20.0.0/16"] }] }] },
    // Banned accounts cannot order. In a DENY a missing claim counts as a match (nobody dodges a DENY by
    // dropping their token), so the rule is scoped to the paths that need a signed-in customer anyway.
    {
      name: "banned",
      action: "DENY",
      rules: [{ to: [{ paths: ["/cart*", "/orders*", "/refunds"] }], when: [{ key: "request.auth.claims[status]", values: ["banned"] }] }],
    },
    {
      name: "shop",
      action: "ALLOW",
      rules: [
        // The catalogue is public, read-only.
        { to: [{ methods: ["GET", "HEAD"], paths: ["/", "/catalog*", "/static/*"] }] },
        // Signed-in customers manage their cart and orders.
        { from: [{ requestPrincipals: ["https://issuer.weft.test/*"] }], to: [{ paths: ["/cart*", "/orders*"] }] },
        // Refunds need the support role.
        { to: [{ methods: ["POST"], paths: ["/refunds"] }], when: [{ key: "request.auth.claims[roles]", values: ["support"] }] },
        // The billing service calls the payment webhook over mTLS.
        { from: [{ principals: ["cluster.local/ns/billing/sa/*"] }], to: [{ paths: ["/webhooks/payment"] }] },
        // Staff on the office network use the admin API.
        { from: [{ ipBlocks: ["10.20.0.0/16"] }], to: [{ paths: ["/admin*"] }] },
      ],
    },
  ],
  rateLimit: {
    local: [{ name: "checkout", match: { methods: ["POST"], paths: ["/orders*"] }, key: "requestPrincipal", tokensPerFill: 1, fillIntervalMs: 60_000, maxTokens: 3 }],
  },
} satisfies PolicySetInput;
