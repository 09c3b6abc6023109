-- Argo CD health check for tablesync.dev/TableSync.
--
-- Install it in argocd-cm (or the Helm values of Argo CD):
--   resource.customizations.health.tablesync.dev_TableSync: |
--     <this file>
--
-- Mapping (status written by the tablesync operator; the project README's "Status" section):
--   generation not yet observed (status.observedGeneration < metadata.generation) -> Progressing
--   Stalled=True (invalid spec, missing Secret or job ServiceAccount, CronJob name conflict)
--                                                                                    -> Degraded
--   Reconciling=True (retrying after an API error)                                   -> Progressing
--   Ready=True                                                                       -> Healthy
--   anything else (no status yet, Ready=False without Stalled)                       -> Progressing
-- A failed last run does not make the resource unhealthy (Ready means "reconciled into its
-- CronJob", not "the data is fine"); the message then says why the last run failed.

local hs = {}

local function find_condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function message_of(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the tablesync operator to reconcile this TableSync"
  return hs
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the tablesync operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local stalled = find_condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message_of(stalled, "Stalled")
  return hs
end

local reconciling = find_condition(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message_of(reconciling, "Reconciling")
  return hs
end

local ready = find_condition(conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Ready")
  local last_run = find_condition(conditions, "LastRunSucceeded")
  if last_run ~= nil and last_run.status == "False" then
    hs.message = hs.message .. "; last run failed (" .. tostring(last_run.reason) .. "): " .. message_of(last_run, "")
  end
  return hs
end

hs.status = "Progressing"
hs.message = message_of(ready, "Waiting for Ready")
return hs
