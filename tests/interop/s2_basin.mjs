// S2 client set-up shared by seed_reader.mjs and seed_writer.mjs.

import { S2 } from "@s2-dev/streamstore";

export function requireEnv(name, usage) {
  const value = process.env[name];
  if (!value) usage(`${name} is not set`);
  return value;
}

// The SDK's base URLs include the API version; the conventional env endpoints do not.
export function withApiVersion(endpoint) {
  const trimmed = endpoint.replace(/\/+$/, "");
  return trimmed.endsWith("/v1") ? trimmed : `${trimmed}/v1`;
}

// SDK 0.16 has no setting for s2-lite: it takes `baseUrl` (account calls) and
// `makeBasinBaseUrl` (basin calls), and always addresses a basin by its host name
// (`{basin}.b.aws.s2.dev`). s2-lite serves every basin on one endpoint and tells
// them apart by the `s2-basin` request header, so for a shared endpoint (one
// without a `{basin}` placeholder) every basin request carries that header.
export function makeBasin(usage) {
  const accessToken = requireEnv("S2_ACCESS_TOKEN", usage);
  const basinName = requireEnv("S2_BASIN", usage);
  const accountEndpoint = process.env.S2_ACCOUNT_ENDPOINT;
  const basinEndpoint = process.env.S2_BASIN_ENDPOINT;
  const s2 = new S2({
    accessToken,
    ...(accountEndpoint ? { baseUrl: withApiVersion(accountEndpoint) } : {}),
    ...(basinEndpoint
      ? { makeBasinBaseUrl: (name) => withApiVersion(basinEndpoint.replaceAll("{basin}", name)) }
      : {}),
  });
  const basin = s2.basin(basinName);
  if (basinEndpoint && !basinEndpoint.includes("{basin}")) {
    // `client` is the basin's generated HTTP client (private in the typings only);
    // its config headers are merged into every request it makes.
    if (typeof basin.client?.setConfig !== "function") {
      throw new Error("this @s2-dev/streamstore version has no basin client to add s2-basin to");
    }
    basin.client.setConfig({ headers: { "s2-basin": basinName } });
  }
  return basin;
}

export function isFence(record) {
  return record.headers?.length === 1 && record.headers[0][0] === "" && record.headers[0][1] === "fence";
}
