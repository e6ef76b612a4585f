-- Argo CD health check for ductape.app/MessageBroker (DESIGN.md, section 3).
-- Installed as resource.customizations.health.ductape.app_MessageBroker in argocd-cm
-- (argocd-cm.yaml next to this file is generated from it: hack/render-deploy.sh).
--   no status or no Ready condition yet           -> Progressing
--   Ready reason Paused                           -> Suspended
--   observedGeneration older than the generation  -> Progressing (the change is not seen yet)
--   Ready=True                                    -> Healthy
--   Ready reason Provisioning, or Ready=Unknown   -> Progressing
--   any other Ready=False                         -> Degraded
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local ready = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready == nil then
  return hs
end

local reason = ready.reason or ""
local message = ready.message or reason
local generation = obj.metadata and obj.metadata.generation or nil

local function stale(observed)
  return generation ~= nil and observed ~= nil and observed < generation
end

if reason == "Paused" then
  hs.status = "Suspended"
  hs.message = message
elseif stale(obj.status.observedGeneration) or stale(ready.observedGeneration) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
elseif ready.status == "False" and reason ~= "Provisioning" then
  hs.status = "Degraded"
  hs.message = reason .. ": " .. message
else
  hs.status = "Progressing"
  hs.message = message
end
return hs
