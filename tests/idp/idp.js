// A real OpenID Provider for mesh's tests: oidc-provider (a certified
// OpenID Provider for Node.js) with the device flow (RFC 8628), users with
// passwords from a JSON file, and a groups claim.
//
// Usage: node idp.js --users FILE [--listen ADDR] [--port N] [--client-id ID]
//                    [--alg RS256|ES256] [--secret-client-id ID --client-secret-file FILE]
//   Prints one line "issuer http://ADDR:PORT" on stdout once listening.
//
// Clients (both native apps, RFC 8252: the authorization code flow with PKCE
// redirects to http://127.0.0.1:ANY-PORT/callback, and the device flow):
//   --client-id ID (default mesh)   a public client (no secret)
//   --secret-client-id ID           a confidential client whose secret is the
//                                   content of --client-secret-file
//                                   (client_secret_post)
//
// USERS FILE (read at every login, so a test may change it between logins):
//   {"alice": {"password": "pw", "email": "alice@example.com",
//              "name": "Alice", "groups": ["eng"]}, ...}
//
// Interactions (what a person's browser does, driven by curl in the tests):
//   GET  /device?user_code=CODE    the provider's confirm form (xsrf)
//   POST /device                   xsrf, user_code, confirm=yes -> /interaction/UID
//   GET  /interaction/UID          login form (prompt login) or consent form
//   POST /interaction/UID/login    login, password
//   POST /interaction/UID/consent  (no fields) grants the requested scopes
//
// Test-only helper, for tokens a correct provider never issues:
//   POST /test/mint  JSON {sub, aud, iss, exp_in, iat_in, nonce, alg,
//                          kid ("unknown": a key not in the JWKS),
//                          bad_signature (true: last signature byte flipped),
//                          claims (extra claims)}
//   -> {"id_token": "..."} signed with the provider's own keys.
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as crypto from 'node:crypto';

import Provider from 'oidc-provider';
import * as jose from 'jose';

function parseArgs(argv) {
  const o = {
    listen: '127.0.0.1', port: 0, clientId: 'mesh', alg: 'RS256', users: '', secretClientId: '', secretFile: '',
  };
  for (let i = 2; i < argv.length; i += 1) {
    const a = argv[i];
    const v = () => {
      i += 1;
      if (i >= argv.length) throw new Error(`${a} needs a value`);
      return argv[i];
    };
    if (a === '--listen') o.listen = v();
    else if (a === '--port') o.port = Number(v());
    else if (a === '--client-id') o.clientId = v();
    else if (a === '--alg') o.alg = v();
    else if (a === '--users') o.users = v();
    else if (a === '--secret-client-id') o.secretClientId = v();
    else if (a === '--client-secret-file') o.secretFile = v();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.users) throw new Error('--users FILE is required');
  if (!o.secretClientId !== !o.secretFile) throw new Error('--secret-client-id and --client-secret-file go together');
  if (!['RS256', 'ES256'].includes(o.alg)) throw new Error('--alg must be RS256 or ES256');
  return o;
}

function readUsers(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html><html><head><title>${esc(title)}</title></head><body><h1>${esc(title)}</h1>${body}</body></html>\n`;
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > 65536) throw new Error('form too large');
    chunks.push(c);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function readJson(req) {
  const f = [];
  for await (const c of req) f.push(c);
  const t = Buffer.concat(f).toString('utf8');
  return t ? JSON.parse(t) : {};
}

async function main() {
  const opt = parseArgs(process.argv);
  readUsers(opt.users); // fail early on a bad file

  // Signing keys: RS256 and ES256, made at start (kid = thumbprint).
  const keys = {};
  for (const [alg, gen] of [['RS256', { modulusLength: 2048 }], ['ES256', { crv: 'P-256' }]]) {
    const { privateKey } = await jose.generateKeyPair(alg, { ...gen, extractable: true });
    const jwk = await jose.exportJWK(privateKey);
    jwk.kid = await jose.calculateJwkThumbprint(jwk);
    jwk.alg = alg;
    jwk.use = 'sig';
    keys[alg] = { jwk, key: privateKey };
  }
  const stranger = await jose.generateKeyPair('RS256', { modulusLength: 2048, extractable: true });

  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opt.port, opt.listen, resolve);
  });
  const { port } = server.address();
  const host = opt.listen.includes(':') ? `[${opt.listen}]` : opt.listen;
  const issuer = `http://${host}:${port}`;

  // Native clients: oidc-provider accepts any port on a registered loopback
  // redirect (RFC 8252 7.3), and requires PKCE of them.
  const native = {
    application_type: 'native',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'authorization_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
    id_token_signed_response_alg: opt.alg,
  };
  const clients = [{ ...native, client_id: opt.clientId, token_endpoint_auth_method: 'none' }];
  if (opt.secretClientId) {
    clients.push({
      ...native,
      client_id: opt.secretClientId,
      client_secret: readFileSync(opt.secretFile, 'utf8').trim(),
      token_endpoint_auth_method: 'client_secret_post',
    });
  }
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [keys.RS256.jwk, keys.ES256.jwk] },
    scopes: ['openid', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'],
    },
    // Scope claims go into the ID token itself: the coordinator reads them
    // there (it has no access token to call userinfo with).
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      deviceFlow: { enabled: true },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    ttl: { DeviceCode: 600, IdToken: 3600, AccessToken: 3600, Interaction: 600, Session: 3600, Grant: 3600 },
    async findAccount(ctx, id) {
      const u = readUsers(opt.users)[id];
      if (!u) return undefined;
      return {
        accountId: id,
        async claims() {
          return {
            sub: id, email: u.email, email_verified: true, name: u.name, groups: u.groups || [],
          };
        },
      };
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<p id="error">${esc(out.error)}: ${esc(out.error_description || '')}</p>`);
    },
  });
  provider.on('server_error', (ctx, err) => process.stderr.write(`idp: server error: ${err.stack}\n`));
  const callback = provider.callback();

  async function interaction(req, res, uid, action) {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new Error('interaction mismatch');
    const { prompt } = details;
    if (req.method === 'GET') {
      res.setHeader('Content-Type', 'text/html');
      if (prompt.name === 'login') {
        res.end(page('Sign-in', `<form id="login" method="post" action="/interaction/${esc(uid)}/login">
<input name="login" placeholder="user"/><input name="password" type="password"/>
<button type="submit">Sign-in</button></form>`));
      } else {
        res.end(page('Authorize', `<p>${esc(details.params.client_id)} asks for: ${esc(details.params.scope)}</p>
<form id="consent" method="post" action="/interaction/${esc(uid)}/consent"><button type="submit">Continue</button></form>`));
      }
      return;
    }
    const form = await readForm(req);
    if (action === 'login') {
      const users = readUsers(opt.users);
      const login = form.get('login') || '';
      const u = Object.hasOwn(users, login) ? users[login] : undefined;
      if (!u || u.disabled || u.password !== (form.get('password') || '')) {
        res.statusCode = 401;
        res.setHeader('Content-Type', 'text/html');
        res.end(page('Sign-in', '<p id="error">invalid user or password</p>'));
        return;
      }
      await provider.interactionFinished(req, res, { login: { accountId: login } },
        { mergeWithLastSubmission: false });
      return;
    }
    if (action === 'consent' && prompt.name === 'consent') {
      const { grantId, session, params } = details;
      const grant = grantId ? await provider.Grant.find(grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const d = prompt.details;
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } },
        { mergeWithLastSubmission: true });
      return;
    }
    res.statusCode = 400;
    res.end('bad interaction\n');
  }

  async function mint(req, res) {
    const b = await readJson(req);
    const now = Math.floor(Date.now() / 1000);
    const alg = b.alg || 'RS256';
    if (!keys[alg]) throw new Error('alg must be RS256 or ES256');
    const unknown = b.kid === 'unknown';
    const key = unknown ? stranger.privateKey : keys[alg].key;
    const kid = unknown ? 'unknown-kid' : keys[alg].jwk.kid;
    const payload = {
      iss: b.iss || issuer,
      sub: b.sub || 'alice',
      aud: b.aud || opt.clientId,
      iat: now + (b.iat_in || 0),
      exp: now + (b.exp_in === undefined ? 600 : b.exp_in),
      ...(b.nonce ? { nonce: b.nonce } : {}),
      ...(b.claims || {}),
    };
    let token = await new jose.SignJWT(payload)
      .setProtectedHeader({ alg: unknown ? 'RS256' : alg, kid, typ: 'JWT' }).sign(key);
    if (b.bad_signature) {
      const parts = token.split('.');
      const sig = Buffer.from(parts[2], 'base64url');
      sig[sig.length - 1] ^= 1;
      parts[2] = sig.toString('base64url');
      token = parts.join('.');
    }
    res.setHeader('Content-Type', 'application/json');
    res.end(`${JSON.stringify({ id_token: token })}\n`);
  }

  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    const m = url.pathname.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|consent))?$/);
    let work;
    if (m) work = interaction(req, res, m[1], m[2] || '');
    else if (url.pathname === '/test/mint' && req.method === 'POST') work = mint(req, res);
    else return callback(req, res);
    work.catch((err) => {
      process.stderr.write(`idp: ${req.method} ${url.pathname}: ${err.message}\n`);
      if (!res.headersSent) res.statusCode = 400;
      res.end(`${JSON.stringify({ error: err.message })}\n`);
    });
    return undefined;
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
  process.stdout.write(`issuer ${issuer}\n`);
}

main().catch((err) => {
  process.stderr.write(`idp: error: ${err.message}\n`);
  process.exit(1);
});
