-- credit-jobs eligibility over the SaaS template's own tables (issue 10 §3; docs/adopting-eligibility.md).
--
-- Install in the database (and schema) that holds both the template's tables and the ledger, after
-- `credit-jobs db upgrade`. It creates:
--   credit_plan_prices          the mapping from the template's payment/membership price ids to credit-jobs plan
--                               codes (one row per price; fill it from your pricing configuration). A price with no
--                               row maps to 'unmapped:<price id>', which distribute-credits counts and names as an
--                               unconfigured plan — it never grants credits by guess.
--   saas_credit_eligibility     a view with the shape credit_eligibility needs, one row per template user:
--                               (user_id, plan_code, status, is_lifetime, is_banned)
-- Rules, one row per user (first match wins):
--   1. an unrevoked lifetime membership (revoked_at IS NULL)        -> its price's plan, status 'lifetime', lifetime
--   2. the latest 'subscription' payment whose status is active or trialing -> its price's plan, status 'active'
--   3. anyone else                                                  -> plan 'free', status 'active'
--   is_banned: banned = true and the ban has not expired (ban_expires NULL, or later than now). The template stores
--   timestamps without time zone; they are read as UTC.
-- Then point credit-jobs at it (docs/adopting-eligibility.md): replace the credit_eligibility table by a view of
-- this one, in one transaction.

CREATE TABLE IF NOT EXISTS credit_plan_prices (
    price_id  text PRIMARY KEY,
    plan_code text NOT NULL
);

CREATE OR REPLACE VIEW saas_credit_eligibility AS
WITH lifetime AS (
    SELECT DISTINCT ON (m.user_id) m.user_id, m.price_id
    FROM user_lifetime_membership m
    WHERE m.revoked_at IS NULL
    ORDER BY m.user_id, m.created_at DESC, m.id
), subscription AS (
    SELECT DISTINCT ON (p.user_id) p.user_id, p.price_id
    FROM payment p
    WHERE p.type = 'subscription' AND p.status IN ('active', 'trialing')
    ORDER BY p.user_id, p.created_at DESC, p.id
)
SELECT u.id AS user_id,
       CASE WHEN l.user_id IS NOT NULL THEN coalesce(lp.plan_code, 'unmapped:' || l.price_id)
            WHEN s.user_id IS NOT NULL THEN coalesce(sp.plan_code, 'unmapped:' || s.price_id)
            ELSE 'free' END AS plan_code,
       CASE WHEN l.user_id IS NOT NULL THEN 'lifetime' ELSE 'active' END AS status,
       l.user_id IS NOT NULL AS is_lifetime,
       coalesce(u.banned, false)
           AND (u.ban_expires IS NULL OR u.ban_expires > (now() AT TIME ZONE 'UTC')) AS is_banned
FROM "user" u
LEFT JOIN lifetime l ON l.user_id = u.id
LEFT JOIN credit_plan_prices lp ON lp.price_id = l.price_id
LEFT JOIN subscription s ON s.user_id = u.id
LEFT JOIN credit_plan_prices sp ON sp.price_id = s.price_id;
